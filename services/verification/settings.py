"""Verification settings, from `BANGFU_VERIFICATION_*` variables."""

from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class VerificationSettings(ServiceSettings):
    service: ClassVar[str] = "verification"
    model_config = SettingsConfigDict(env_prefix="BANGFU_VERIFICATION_", extra="ignore")
