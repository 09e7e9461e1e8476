"""Settings base: suite-wide `BANGFU_*` variables and one prefix per service."""

from __future__ import annotations

import json
import re
import ssl
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self, get_args

from pydantic import BaseModel, Field, SecretBytes, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from shared.crypto import Keyring

DEFAULT_PORTS = {
    "registry": 8101,
    "verification": 8102,
    "benefits": 8103,
    "notifications": 8104,
    "sandbox": 8190,
}
EMBEDDED_NATS_PORT = 4333
# Signs the audit chain's checkpoint in development; public, so production refuses it.
DEVELOPMENT_AUDIT_CHECKPOINT_KEY = "bangfu-audit-checkpoint-development-key"
# What the shipped manifests hold where ops must put a secret of their own.
PLACEHOLDER_SECRET = "CHANGE-ME"
_MIGRATING: ContextVar[bool] = ContextVar("bangfu_migrating", default=False)
_SECRET_NAME = re.compile(r"secret|password|(^|_)(keys?|token)(_|$)")


def secret_fields(settings: type[BaseModel]) -> list[str]:
    """The fields that hold secrets: typed SecretStr/SecretBytes, or named like a key, token,
    secret or password. Found by walking the class, so a setting added later is covered."""
    return [
        name
        for name, field in settings.model_fields.items()
        if _SECRET_NAME.search(name) or _holds_secret(field.annotation)
    ]


def _holds_secret(annotation: Any) -> bool:
    return annotation in (SecretStr, SecretBytes) or any(
        _holds_secret(argument) for argument in get_args(annotation)
    )


def is_url(issuer: str) -> bool:
    """Whether an issuer names an identity provider to discover (an http(s) URL)."""
    return issuer.startswith(("https://", "http://"))


def _revealed(value: Any) -> Any:
    return value.get_secret_value() if isinstance(value, SecretStr | SecretBytes) else value


class SuiteSettings(BaseSettings):
    """Values every process of the suite shares, read from `BANGFU_*` variables."""

    model_config = SettingsConfigDict(env_prefix="BANGFU_", extra="ignore")

    env: Literal["development", "production"] = "development"
    home: Path = Path(".bangfu")
    # Unset: the embedded nats-server that `bangfu up` starts on `embedded_nats_port`.
    nats_url: str = ""
    embedded_nats_port: int = EMBEDDED_NATS_PORT
    # TLS to NATS: the CA that signed the server's certificate (else the system's trust store,
    # used whenever the URL is tls://), and a client certificate and key for mutual TLS.
    nats_ca_file: Path | None = None
    nats_cert_file: Path | None = None
    nats_key_file: Path | None = None
    # One PostgreSQL for every service, each in its own schema; unset means SQLite under `home`.
    database_url: str | None = None

    # The identity provider's URL (its `iss`): keys and token endpoint come from its OpenID
    # discovery. Anything else (the default) means the development signer under `home`.
    auth_issuer: str = "bangfu-dev"
    auth_audience: str = "bangfu"
    # Overrides the discovered jwks_uri.
    auth_jwks_url: str | None = None
    auth_public_key_file: Path | None = None
    # The provider's keys are fetched again after this long: a removed key is refused from then.
    auth_jwks_cache_seconds: float = Field(default=300, gt=0)
    # A token whose `kid` the JWKS does not list refetches it at most once per this interval.
    auth_jwks_refetch_seconds: float = Field(default=30, ge=0)
    # Clock skew allowed between the provider and the services, on `exp`, `iat` and `nbf`.
    auth_leeway_seconds: float = Field(default=30, ge=0, le=120)

    crypto_profile: Literal["intl", "gm"] = "intl"
    stream_max_age_days: float = 365
    stream_duplicate_window_seconds: float = 120
    stream_replicas: int = 1
    audit_retention_days: int = 184
    max_body_bytes: int = 1024 * 1024
    # Requests per second per client and process; 0 switches the limit off.
    rate_limit_per_second: float = 200
    log_level: str = "INFO"
    log_json: bool = True

    @model_validator(mode="after")
    def _embedded_nats_by_default(self) -> SuiteSettings:
        if not self.nats_url:
            self.nats_url = f"nats://127.0.0.1:{self.embedded_nats_port}"
        return self

    @model_validator(mode="after")
    def _refuse_development_auth_in_production(self) -> SuiteSettings:
        if self.env == "production" and not is_url(self.auth_issuer):
            raise ValueError(
                "BANGFU_AUTH_ISSUER must be the identity provider's URL (https://…) when "
                "BANGFU_ENV=production: tokens are validated against the keys its discovery "
                f"publishes, and services get theirs from it (got {self.auth_issuer!r})"
            )
        return self

    @property
    def uses_identity_provider(self) -> bool:
        """Whether tokens come from an identity provider (else from the development signer)."""
        return is_url(self.auth_issuer) or self.auth_jwks_url is not None

    def nats_tls(self) -> ssl.SSLContext | None:
        """The TLS context for NATS when a CA or client certificate is configured."""
        if not (self.nats_ca_file or self.nats_cert_file):
            return None
        context = ssl.create_default_context(
            cafile=str(self.nats_ca_file) if self.nats_ca_file else None
        )
        if self.nats_cert_file:
            context.load_cert_chain(
                str(self.nats_cert_file), str(self.nats_key_file) if self.nats_key_file else None
            )
        return context

    @property
    def signing_key_file(self) -> Path:
        """The embedded default's private signing key (development only)."""
        return self.home / "jwt-signing-key.pem"

    @property
    def public_key_file(self) -> Path:
        return self.auth_public_key_file or self.home / "jwt-signing-key.pub.pem"


class ServiceSettings(BaseSettings):
    """Base of each service's settings; subclasses set `service` and `env_prefix`."""

    service: ClassVar[str]
    model_config = SettingsConfigDict(extra="ignore")

    suite: SuiteSettings = Field(default_factory=SuiteSettings)
    database_url: str | None = None
    # A PostgreSQL schema for this service's tables (default: the database's search path).
    database_schema: str | None = None
    host: str = "127.0.0.1"
    port: int = 0
    outbox_batch_size: int = 200
    outbox_poll_seconds: float = 0.5
    consumer_batch_size: int = 50
    consumer_max_deliver: int = 5
    consumer_ack_wait_seconds: float = 30
    # A consumer whose loop dies restarts after a delay doubling from the first to the max;
    # /readyz says not ready while it died this many times within the window.
    consumer_restart_delay_seconds: float = 0.5
    consumer_restart_max_delay_seconds: float = 30
    consumer_restart_window_seconds: float = 300
    consumer_unready_after_restarts: int = 3
    # `k2:BASE64,k1:BASE64`, the first is current; unset in development means generated keys.
    encryption_keys: SecretStr | None = None
    blind_index_key: SecretStr | None = None
    # The audit chain's head, signed (HMAC) every `audit_checkpoint_seconds` into a file kept
    # outside the database (default: under home), so that deleting the newest records shows.
    audit_checkpoint_file: Path | None = None
    audit_checkpoint_key: SecretStr = SecretStr(DEVELOPMENT_AUDIT_CHECKPOINT_KEY)
    audit_checkpoint_seconds: float = 5
    # The registry, for services that read household values (events carry none).
    registry_url: str = "http://127.0.0.1:8101"
    # This service as a client of the identity provider (client credentials): its tokens to
    # call the registry. Unset without a provider: tokens from the development signer.
    client_id: str | None = None
    client_secret: SecretStr | None = None
    # Whether the service calls the registry (and so needs a client of the provider).
    calls_registry: ClassVar[bool] = False

    @model_validator(mode="after")
    def _fill_defaults(self) -> ServiceSettings:
        if not self.port:
            self.port = DEFAULT_PORTS[self.service]
        keys = self.encryption_keys and self.blind_index_key
        if self.suite.env == "production" and not keys and not _MIGRATING.get():
            prefix = f"BANGFU_{self.service.upper()}_"
            raise ValueError(
                f"{prefix}ENCRYPTION_KEYS and {prefix}BLIND_INDEX_KEY are required in production"
            )
        return self

    @model_validator(mode="after")
    def _need_a_client_of_the_identity_provider(self) -> ServiceSettings:
        """With a provider, a service's calls carry tokens only the provider can give it."""
        if not self.calls_registry or _MIGRATING.get():
            return self
        if is_url(self.suite.auth_issuer) and not (self.client_id and self.client_secret):
            prefix = f"BANGFU_{self.service.upper()}_"
            raise ValueError(
                f"{prefix}CLIENT_ID and {prefix}CLIENT_SECRET are required when "
                "BANGFU_AUTH_ISSUER is an identity provider: the service gets its tokens to "
                "call the registry from the provider's token endpoint"
            )
        if self.suite.uses_identity_provider and not is_url(self.suite.auth_issuer):
            raise ValueError(
                "BANGFU_AUTH_JWKS_URL without BANGFU_AUTH_ISSUER as the identity provider's "
                "URL: the service cannot find the token endpoint to call the registry with"
            )
        return self

    @model_validator(mode="after")
    def _refuse_development_secrets_in_production(self) -> ServiceSettings:
        """Production refuses a secret left at its public development default or at the
        manifests' placeholder: such a key would let anyone compute what it protects."""
        if self.suite.env != "production" or _MIGRATING.get():
            return self
        prefix = self.model_config.get("env_prefix", "")
        fields = type(self).model_fields
        for name in secret_fields(type(self)):
            value = _revealed(getattr(self, name))
            default = _revealed(fields[name].get_default(call_default_factory=True))
            if value is None:
                continue
            if default is not None and value == default:
                raise ValueError(
                    f"{prefix}{name.upper()} is the public development default; "
                    "production needs a secret of its own"
                )
            if str(value).strip() == PLACEHOLDER_SECRET:
                raise ValueError(
                    f"{prefix}{name.upper()} is still the placeholder {PLACEHOLDER_SECRET}; "
                    "production needs a secret of its own"
                )
        return self

    @classmethod
    def for_migration(cls) -> Self:
        """The settings as read from the environment, without asking for the PII keys:
        migrations read and write no PII, so the migration job need not hold any service's keys.
        """
        token = _MIGRATING.set(True)
        try:
            return cls()
        finally:
            _MIGRATING.reset(token)

    def keyring(self) -> Keyring:
        """The keys for PII at rest; in development generated once under `home`."""
        return load_keyring(self.suite, self.service, self.encryption_keys, self.blind_index_key)

    @property
    def database(self) -> tuple[str, str | None]:
        """The database URL and, when one PostgreSQL serves all services, this service's schema."""
        return database_of(self.suite, self.service, self.database_url, self.database_schema)

    @property
    def audit_checkpoint_path(self) -> Path:
        return (
            self.audit_checkpoint_file or self.suite.home / f"{self.service}-audit-checkpoint.json"
        )

    @property
    def stream(self) -> str:
        """The JetStream stream this service publishes to."""
        return self.service.upper()


def load_keyring(
    suite: SuiteSettings,
    name: str,
    encryption_keys: SecretStr | None,
    blind_index_key: SecretStr | None,
) -> Keyring:
    """`name`'s keys for data at rest (`BANGFU_{NAME}_ENCRYPTION_KEYS` and `_BLIND_INDEX_KEY`);
    in development generated once under `home`."""
    from shared.crypto import Keyring, generate_keys

    profile = suite.crypto_profile
    if bool(encryption_keys) != bool(blind_index_key):
        prefix = f"BANGFU_{name.upper()}_"
        raise ValueError(
            f"set both {prefix}ENCRYPTION_KEYS and {prefix}BLIND_INDEX_KEY, "
            "or neither (development keys)"
        )
    if encryption_keys and blind_index_key:
        keys, index_key = encryption_keys.get_secret_value(), blind_index_key.get_secret_value()
    else:
        path = suite.home / f"{name}-keys.{profile}.json"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            keys, index_key = generate_keys(profile)
            path.write_text(json.dumps({"keys": keys, "index_key": index_key}))
            path.chmod(0o600)
        stored = json.loads(path.read_text())
        keys, index_key = stored["keys"], stored["index_key"]
    return Keyring.from_strings(profile, keys, index_key)


def database_of(
    suite: SuiteSettings, name: str, url: str | None, schema: str | None
) -> tuple[str, str | None]:
    """`name`'s own database URL and schema, else the suite's database with a schema `name`,
    else a SQLite file `name.db` under home."""
    if url:
        return url, schema
    if suite.database_url:
        return suite.database_url, name
    return f"sqlite+aiosqlite:///{suite.home / (name + '.db')}", None
