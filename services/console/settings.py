"""Console settings, from `BANGFU_CONSOLE_*` variables (and the suite's `BANGFU_AUTH_*`)."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.settings import SuiteSettings, is_url

# What the console asks the provider for. No `pii:read`: with it the registry answers every read
# in clear (and wants a purpose), and the console shows numbers masked only.
# `offline_access` gives a refresh token, so a working day needs one sign-in, not one per token.
# `verification:request` records consents and reads 核对 reports, `benefits:read` reads the
# 明白卡 (the provider grants each only to the people registered with it).
DEFAULT_SCOPES = (
    "openid offline_access registry:read registry:write "
    "review:community review:street review:county verification:request benefits:read"
)


DEFAULT_PORT = 8105


class _Port(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BANGFU_CONSOLE_", extra="ignore")

    port: int = DEFAULT_PORT


def configured_port() -> int:
    """`BANGFU_CONSOLE_PORT`, read without the rest (which needs the provider's URL set)."""
    return _Port().port


class ConsoleSettings(BaseSettings):
    """Where the console listens, how browsers reach it, and which services it calls."""

    model_config = SettingsConfigDict(env_prefix="BANGFU_CONSOLE_", extra="ignore")

    suite: SuiteSettings = Field(default_factory=SuiteSettings)
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
    # Sessions held at once (in memory); the oldest is dropped beyond it.
    max_sessions: int = Field(default=10_000, ge=1)
    request_timeout_seconds: float = Field(default=10, gt=0)

    @model_validator(mode="after")
    def _needs_a_provider(self) -> ConsoleSettings:
        if not is_url(self.suite.auth_issuer):
            raise ValueError(
                "the console signs people in through an OpenID provider: set BANGFU_AUTH_ISSUER "
                f"to its URL (got {self.suite.auth_issuer!r}; `bangfu up --idp` runs one)"
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
