"""Suite and service settings: environment prefixes, production refusals, database, dev keys."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from services.benefits.settings import BenefitsSettings
from services.notifications.settings import NotificationsSettings
from services.registry.settings import RegistrySettings
from services.verification.settings import VerificationSettings
from shared.crypto import generate_keys
from shared.identity import DEVELOPMENT_FEED_KEY
from shared.settings import (
    DEFAULT_PORTS,
    EMBEDDED_NATS_PORT,
    PLACEHOLDER_SECRET,
    ServiceSettings,
    SuiteSettings,
    secret_fields,
)

PG_URL = "postgresql+asyncpg://bangfu@db.example.test:5432/bangfu"
ISSUER = "https://idp.example.test"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No BANGFU_* variable of the machine leaks in; home is the test's own folder."""
    for name in list(os.environ):
        if name.startswith("BANGFU_"):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    monkeypatch.setenv("BANGFU_HOME", str(home))
    return home


class TestSuiteSettings:
    def test_production_without_an_identity_provider_is_refused_naming_the_variable(
        self,
    ) -> None:
        with pytest.raises(ValidationError, match="BANGFU_AUTH_ISSUER"):
            SuiteSettings(env="production")

    def test_production_read_from_the_environment_is_refused_without_a_provider_url(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("BANGFU_ENV", "production")
        monkeypatch.setenv("BANGFU_AUTH_ISSUER", "bangfu-dev")

        with pytest.raises(ValidationError, match="BANGFU_AUTH_ISSUER"):
            SuiteSettings()

    def test_production_with_a_jwks_url_alone_is_refused(self) -> None:
        """Without the provider's URL the services could neither check `iss` against it nor
        find its token endpoint for their own tokens."""
        with pytest.raises(ValidationError, match="BANGFU_AUTH_ISSUER"):
            SuiteSettings(env="production", auth_jwks_url="https://idp.example.test/jwks")

    def test_production_with_the_provider_url_as_issuer_is_accepted(self) -> None:
        suite = SuiteSettings(env="production", auth_issuer=ISSUER)

        assert suite.uses_identity_provider is True
        assert suite.auth_jwks_url is None  # found through discovery

    def test_the_development_signer_is_used_without_a_provider(self) -> None:
        suite = SuiteSettings()

        assert suite.uses_identity_provider is False
        assert (suite.auth_jwks_cache_seconds, suite.auth_jwks_refetch_seconds) == (300, 30)
        assert suite.auth_leeway_seconds == 30

    @pytest.mark.parametrize("leeway", [-1, 121, 3600])
    def test_a_clock_skew_leeway_outside_zero_to_two_minutes_is_refused(
        self, leeway: float
    ) -> None:
        with pytest.raises(ValidationError, match="auth_leeway_seconds"):
            SuiteSettings(auth_leeway_seconds=leeway)

    def test_the_jwks_timings_and_leeway_are_read_from_the_environment(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("BANGFU_AUTH_JWKS_CACHE_SECONDS", "60")
        monkeypatch.setenv("BANGFU_AUTH_JWKS_REFETCH_SECONDS", "5")
        monkeypatch.setenv("BANGFU_AUTH_LEEWAY_SECONDS", "120")

        suite = SuiteSettings()

        assert (suite.auth_jwks_cache_seconds, suite.auth_jwks_refetch_seconds) == (60, 5)
        assert suite.auth_leeway_seconds == 120

    def test_an_unknown_environment_name_is_refused(self) -> None:
        with pytest.raises(ValidationError, match="env"):
            SuiteSettings(env="staging")

    def test_nats_defaults_to_the_embedded_server(self) -> None:
        assert SuiteSettings().nats_url == f"nats://127.0.0.1:{EMBEDDED_NATS_PORT}"

    def test_nats_defaults_to_the_embedded_server_on_its_configured_port(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("BANGFU_EMBEDDED_NATS_PORT", "4999")

        assert SuiteSettings().nats_url == "nats://127.0.0.1:4999"

    def test_variables_are_read_with_the_bangfu_prefix(
        self, monkeypatch: pytest.MonkeyPatch, clean_environment: Path
    ) -> None:
        monkeypatch.setenv("BANGFU_NATS_URL", "nats://nats.example.test:4222")
        monkeypatch.setenv("BANGFU_RATE_LIMIT_PER_SECOND", "0")
        monkeypatch.setenv("NATS_URL", "nats://wrong.example.test:4222")

        suite = SuiteSettings()

        assert suite.nats_url == "nats://nats.example.test:4222"
        assert suite.rate_limit_per_second == 0
        assert suite.home == clean_environment

    def test_the_development_key_files_live_under_home(self, clean_environment: Path) -> None:
        suite = SuiteSettings()

        assert suite.signing_key_file == clean_environment / "jwt-signing-key.pem"
        assert suite.public_key_file == clean_environment / "jwt-signing-key.pub.pem"

    def test_a_configured_public_key_file_wins(self, tmp_path: Path) -> None:
        suite = SuiteSettings(auth_public_key_file=tmp_path / "idp.pem")

        assert suite.public_key_file == tmp_path / "idp.pem"


class TestServiceSettings:
    def test_production_without_encryption_keys_is_refused_naming_the_variables(self) -> None:
        suite = SuiteSettings(env="production", auth_issuer=ISSUER)

        with pytest.raises(ValidationError) as caught:
            RegistrySettings(suite=suite)

        message = str(caught.value)
        assert "BANGFU_REGISTRY_ENCRYPTION_KEYS" in message
        assert "BANGFU_REGISTRY_BLIND_INDEX_KEY" in message

    def test_production_with_only_one_of_the_two_keys_is_refused(self) -> None:
        suite = SuiteSettings(env="production", auth_issuer=ISSUER)
        keys, _ = generate_keys("intl")

        with pytest.raises(ValidationError, match="BANGFU_BENEFITS_BLIND_INDEX_KEY"):
            BenefitsSettings(suite=suite, encryption_keys=SecretStr(keys))

    def test_production_with_both_keys_is_accepted(self) -> None:
        suite = SuiteSettings(env="production", auth_issuer=ISSUER)
        keys, index_key = generate_keys("intl")

        settings = RegistrySettings(
            suite=suite,
            encryption_keys=SecretStr(keys),
            blind_index_key=SecretStr(index_key),
            audit_checkpoint_key=SecretStr(os.urandom(32).hex()),
        )

        assert settings.suite.env == "production"

    @pytest.mark.parametrize(
        "settings_class", [VerificationSettings, BenefitsSettings, NotificationsSettings]
    )
    def test_a_service_calling_the_registry_needs_a_client_of_the_provider(
        self, settings_class: type[ServiceSettings]
    ) -> None:
        suite = SuiteSettings(auth_issuer=ISSUER)
        prefix = f"BANGFU_{settings_class.service.upper()}_"

        with pytest.raises(ValidationError, match=f"{prefix}CLIENT_ID and {prefix}CLIENT_SECRET"):
            settings_class(suite=suite, client_id="svc")
        settings = settings_class(
            suite=suite, client_id="svc", client_secret=SecretStr("s3cret-of-its-own")
        )
        assert settings.client_id == "svc"

    def test_the_registry_calls_no_one_and_needs_no_client(self) -> None:
        assert RegistrySettings(suite=SuiteSettings(auth_issuer=ISSUER)).client_id is None

    def test_a_jwks_url_without_the_provider_url_leaves_no_token_endpoint(self) -> None:
        suite = SuiteSettings(auth_jwks_url="https://idp.example.test/jwks")

        with pytest.raises(ValidationError, match="token endpoint"):
            BenefitsSettings(suite=suite, client_id="svc", client_secret=SecretStr("s"))

    def test_the_client_is_read_with_the_service_prefix(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("BANGFU_AUTH_ISSUER", ISSUER)
        monkeypatch.setenv("BANGFU_NOTIFICATIONS_CLIENT_ID", "svc-notifications")
        monkeypatch.setenv("BANGFU_NOTIFICATIONS_CLIENT_SECRET", "its-secret")

        settings = NotificationsSettings()

        assert settings.client_id == "svc-notifications"
        assert settings.client_secret is not None
        assert settings.client_secret.get_secret_value() == "its-secret"
        assert "its-secret" not in repr(settings)

    def test_variables_are_read_with_the_service_prefix(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("BANGFU_NATS_URL", "nats://nats.example.test:4222")
        monkeypatch.setenv("BANGFU_REGISTRY_DATABASE_URL", PG_URL)
        monkeypatch.setenv("BANGFU_REGISTRY_PORT", "9101")
        monkeypatch.setenv("BANGFU_BENEFITS_PORT", "9103")

        settings = RegistrySettings()

        assert settings.database_url == PG_URL
        assert settings.port == 9101
        assert settings.suite.nats_url == "nats://nats.example.test:4222"

    def test_production_read_from_the_environment_refuses_a_service_without_keys(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("BANGFU_ENV", "production")
        monkeypatch.setenv("BANGFU_AUTH_ISSUER", ISSUER)

        with pytest.raises(ValidationError, match="BANGFU_VERIFICATION_ENCRYPTION_KEYS"):
            VerificationSettings()

    @pytest.mark.parametrize(
        "settings_class",
        [RegistrySettings, VerificationSettings, BenefitsSettings, NotificationsSettings],
    )
    def test_each_service_has_its_default_port_and_stream(
        self, settings_class: type[ServiceSettings]
    ) -> None:
        settings = settings_class()

        assert settings.port == DEFAULT_PORTS[settings_class.service]
        assert settings.stream == settings_class.service.upper()


class TestDatabase:
    def test_sqlite_under_home_by_default(self, clean_environment: Path) -> None:
        url, schema = RegistrySettings().database

        assert url == f"sqlite+aiosqlite:///{clean_environment / 'registry.db'}"
        assert schema is None

    def test_the_suite_wide_url_gives_each_service_a_schema_named_after_it(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("BANGFU_DATABASE_URL", PG_URL)

        assert RegistrySettings().database == (PG_URL, "registry")
        assert NotificationsSettings().database == (PG_URL, "notifications")

    def test_a_service_url_is_used_with_its_own_schema(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("BANGFU_DATABASE_URL", "postgresql+asyncpg://suite@db/suite")
        monkeypatch.setenv("BANGFU_REGISTRY_DATABASE_URL", PG_URL)
        monkeypatch.setenv("BANGFU_REGISTRY_DATABASE_SCHEMA", "reg")

        assert RegistrySettings().database == (PG_URL, "reg")

    def test_a_service_url_without_a_schema_uses_the_search_path(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("BANGFU_REGISTRY_DATABASE_URL", PG_URL)

        assert RegistrySettings().database == (PG_URL, None)


class TestKeyring:
    def test_development_keys_are_created_once_under_home(self, clean_environment: Path) -> None:
        settings = RegistrySettings()

        first = settings.keyring()
        path = clean_environment / "registry-keys.intl.json"
        stored = path.read_text()
        second = RegistrySettings().keyring()

        assert path.read_text() == stored
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert dict(second.encryption_keys) == dict(first.encryption_keys)
        assert second.current_key_id == first.current_key_id == "k1"
        assert second.index_key == first.index_key

    def test_each_service_and_profile_has_keys_of_its_own(self, clean_environment: Path) -> None:
        registry = RegistrySettings().keyring()
        benefits = BenefitsSettings().keyring()
        registry_gm = RegistrySettings(suite=SuiteSettings(crypto_profile="gm")).keyring()

        assert registry.index_key != benefits.index_key
        assert registry_gm.profile == "gm"
        assert registry_gm.index_key != registry.index_key
        assert sorted(p.name for p in clean_environment.iterdir()) == [
            "benefits-keys.intl.json",
            "registry-keys.gm.json",
            "registry-keys.intl.json",
        ]

    def test_configured_keys_are_used_and_nothing_is_written(self, clean_environment: Path) -> None:
        keys, index_key = generate_keys("intl")

        keyring = RegistrySettings(
            encryption_keys=SecretStr(keys), blind_index_key=SecretStr(index_key)
        ).keyring()

        assert keyring.current_key_id == "k1"
        assert not clean_environment.exists()

    def test_only_one_of_the_two_keys_is_refused_in_development_too(
        self, clean_environment: Path
    ) -> None:
        keys, _ = generate_keys("intl")

        with pytest.raises(ValueError, match="BLIND_INDEX_KEY"):
            RegistrySettings(encryption_keys=SecretStr(keys)).keyring()


class TestMigrationSettings:
    def test_the_migration_job_needs_no_pii_keys_even_in_production(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("BANGFU_ENV", "production")
        monkeypatch.setenv("BANGFU_AUTH_ISSUER", ISSUER)
        monkeypatch.setenv("BANGFU_DATABASE_URL", PG_URL)

        settings = RegistrySettings.for_migration()

        assert settings.database == (PG_URL, "registry")
        with pytest.raises(ValidationError, match="BANGFU_REGISTRY_ENCRYPTION_KEYS"):
            RegistrySettings()  # a service itself still refuses to start without them


SERVICE_SETTINGS: list[type[ServiceSettings]] = [
    RegistrySettings,
    VerificationSettings,
    BenefitsSettings,
    NotificationsSettings,
]


def _variable(settings: type[ServiceSettings], field: str) -> str:
    return f"BANGFU_{settings.service.upper()}_{field.upper()}"


def _production_environment(
    monkeypatch: pytest.MonkeyPatch, settings: type[ServiceSettings]
) -> None:
    """Production as ops configure it: every secret setting of the service set to its own value."""
    monkeypatch.setenv("BANGFU_ENV", "production")
    monkeypatch.setenv("BANGFU_AUTH_ISSUER", ISSUER)
    if settings.calls_registry:
        monkeypatch.setenv(_variable(settings, "client_id"), f"svc-{settings.service}")
    keys, index_key = generate_keys("intl")
    own = {"encryption_keys": keys, "blind_index_key": index_key}
    for field in secret_fields(settings):
        value = own.get(field, f"{field}-{os.urandom(16).hex()}")
        monkeypatch.setenv(_variable(settings, field), value)


def _development_values() -> list[tuple[type[ServiceSettings], str, str]]:
    """(settings, field, value) for every secret setting's public default and the placeholder."""
    cases = []
    for settings in SERVICE_SETTINGS:
        for field in secret_fields(settings):
            default = settings.model_fields[field].get_default(call_default_factory=True)
            if isinstance(default, SecretStr):
                default = default.get_secret_value()
            if default is not None:
                cases.append((settings, field, str(default)))
            cases.append((settings, field, PLACEHOLDER_SECRET))
    return cases


class TestDevelopmentSecretsInProduction:
    def test_every_secret_setting_of_the_services_is_found(self) -> None:
        assert {s.service: sorted(secret_fields(s)) for s in SERVICE_SETTINGS} == {
            "registry": [
                "audit_checkpoint_key",
                "blind_index_key",
                "client_secret",
                "encryption_keys",
            ],
            "verification": [
                "audit_checkpoint_key",
                "blind_index_key",
                "client_secret",
                "encryption_keys",
                "feed_index_key",
            ],
            "benefits": [
                "audit_checkpoint_key",
                "blind_index_key",
                "client_secret",
                "encryption_keys",
            ],
            "notifications": [
                "audit_checkpoint_key",
                "blind_index_key",
                "client_secret",
                "encryption_keys",
                "sms_gateway_key",
            ],
        }

    @pytest.mark.parametrize("settings", SERVICE_SETTINGS, ids=lambda s: s.service)
    def test_production_with_secrets_of_its_own_starts(
        self, settings: type[ServiceSettings], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        _production_environment(monkeypatch, settings)

        assert settings().suite.env == "production"

    @pytest.mark.parametrize(
        ("settings", "field", "value"),
        _development_values(),
        ids=lambda v: v.service if isinstance(v, type) else str(v)[:20],
    )
    def test_production_refuses_a_development_value_naming_the_setting(
        self,
        settings: type[ServiceSettings],
        field: str,
        value: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        _production_environment(monkeypatch, settings)
        monkeypatch.setenv(_variable(settings, field), value)

        with pytest.raises(ValidationError, match=_variable(settings, field)) as refused:
            settings()
        message = refused.value.errors()[0]["msg"]
        assert value == PLACEHOLDER_SECRET or value not in message  # names it, never shows it

    def test_the_development_feed_key_left_unset_is_refused(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        _production_environment(monkeypatch, VerificationSettings)
        monkeypatch.delenv("BANGFU_VERIFICATION_FEED_INDEX_KEY")

        with pytest.raises(ValidationError, match="BANGFU_VERIFICATION_FEED_INDEX_KEY"):
            VerificationSettings()

    def test_development_accepts_the_development_defaults(self) -> None:
        settings = VerificationSettings()

        assert settings.feed_index_key.get_secret_value() == DEVELOPMENT_FEED_KEY

    def test_a_secret_setting_added_later_is_covered_without_listing_it(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        class LaterSettings(RegistrySettings):
            partner_credential: SecretStr = SecretStr("typed-secret-dev-value")
            webhook_signing_key: str = "named-key-dev-value"
            archive_password: str | None = None

        assert {"partner_credential", "webhook_signing_key", "archive_password"} <= set(
            secret_fields(LaterSettings)
        )
        _production_environment(monkeypatch, LaterSettings)
        LaterSettings()  # each set to a value of its own: accepted
        for field, value in [
            ("partner_credential", "typed-secret-dev-value"),
            ("webhook_signing_key", "named-key-dev-value"),
            ("archive_password", PLACEHOLDER_SECRET),
        ]:
            with monkeypatch.context() as patch:
                patch.setenv(_variable(LaterSettings, field), value)
                with pytest.raises(ValidationError, match=_variable(LaterSettings, field)):
                    LaterSettings()

    def test_the_migration_job_holds_no_secrets_and_is_not_refused(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("BANGFU_ENV", "production")
        monkeypatch.setenv("BANGFU_AUTH_ISSUER", ISSUER)

        assert VerificationSettings.for_migration().suite.env == "production"
