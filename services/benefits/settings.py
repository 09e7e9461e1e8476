"""Benefits settings, from `BANGFU_BENEFITS_*` variables."""

from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class BenefitsSettings(ServiceSettings):
    service: ClassVar[str] = "benefits"
    model_config = SettingsConfigDict(env_prefix="BANGFU_BENEFITS_", extra="ignore")
