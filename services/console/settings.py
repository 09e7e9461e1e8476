"""Console settings, from `BANGFU_CONSOLE_*` variables (and the suite's `BANGFU_AUTH_*`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.settings import SuiteSettings, database_of, is_url, load_keyring

if TYPE_CHECKING:
    from shared.crypto import Keyring

# What the console asks the provider for. `pii:read` (granted only to the people registered with
# it) is kept out of the token the pages are read with: with it the registry answers every read
# in clear and wants a purpose. The console asks for a token with it for one clear view at a time.
# `offline_access` gives a refresh token, so a working day needs one sign-in, not one per token.
# `verification:request` records consents and reads 核对 reports, `benefits:read` reads the
# 明白卡 (the provider grants each only to the people registered with it).
DEFAULT_SCOPES = (
    "openid offline_access registry:read registry:write "
    "review:community review:street review:county verification:request benefits:read pii:read"
)


DEFAULT_PORT = 8105


class _Port(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BANGFU_CONSOLE_", extra="ignore")

    port: int = DEFAULT_PORT


def configured_port() -> int:
    """`BANGFU_CONSOLE_PORT`, read without the rest (which needs the provider's URL set)."""
    return _Port().port


class SessionStoreSettings(BaseSettings):
    """Where the console keeps who is signed in: a table `sessions` in its own database (the
    suite's, schema `console`), tokens encrypted with its keys. Apart from the rest so that
    `bangfu migrate` finds the database without the provider's settings."""

    model_config = SettingsConfigDict(env_prefix="BANGFU_CONSOLE_", extra="ignore")

    suite: SuiteSettings = Field(default_factory=SuiteSettings)
    database_url: str | None = None
    # A PostgreSQL schema for the sessions table (default: `console` in the suite's database).
    database_schema: str | None = None
    # `k2:BASE64,k1:BASE64`, the first is current; unset in development means generated keys.
    encryption_keys: SecretStr | None = None
    blind_index_key: SecretStr | None = None

    @property
    def database(self) -> tuple[str, str | None]:
        return database_of(self.suite, "console", self.database_url, self.database_schema)

    def keyring(self) -> Keyring:
        return load_keyring(self.suite, "console", self.encryption_keys, self.blind_index_key)


class ConsoleSettings(SessionStoreSettings):
    """Where the console listens, how browsers reach it, and which services it calls."""

    model_config = SettingsConfigDict(env_prefix="BANGFU_CONSOLE_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    # The URL browsers reach the console at: the redirect URI registered with the provider is
    # `{public_url}/auth/callback`. Cookies are `Secure` when it is https.
    public_url: str = "http://127.0.0.1:8105"
    client_id: str = "bangfu-console"
    scopes: str = DEFAULT_SCOPES
    registry_url: str = "http://127.0.0.1:8101"
    verification_url: str = "http://127.0.0.1:8102"
    benefits_url: str = "http://127.0.0.1:8103"
    # A session ends this long after sign-in, whatever the tokens say (the provider's is 8 h).
    session_hours: float = Field(default=8, gt=0)
    request_timeout_seconds: float = Field(default=10, gt=0)

    @model_validator(mode="after")
    def _needs_a_provider(self) -> ConsoleSettings:
        if not is_url(self.suite.auth_issuer):
            raise ValueError(
                "the console signs people in through an OpenID provider: set BANGFU_AUTH_ISSUER "
                f"to its URL (got {self.suite.auth_issuer!r}; `bangfu up --idp` runs one)"
            )
        if self.suite.env == "production" and not (self.encryption_keys and self.blind_index_key):
            raise ValueError(
                "BANGFU_CONSOLE_ENCRYPTION_KEYS and BANGFU_CONSOLE_BLIND_INDEX_KEY are required "
                "in production: they encrypt the signed-in people's tokens in the database"
            )
        self.public_url = self.public_url.rstrip("/")
        return self

    @property
    def issuer(self) -> str:
        return self.suite.auth_issuer

    @property
    def redirect_uri(self) -> str:
        return f"{self.public_url}/auth/callback"

    @property
    def secure_cookies(self) -> bool:
        return self.public_url.startswith("https://")
