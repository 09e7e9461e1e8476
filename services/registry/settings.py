"""Registry settings, from `BANGFU_REGISTRY_*` variables."""

from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class RegistrySettings(ServiceSettings):
    service: ClassVar[str] = "registry"
    model_config = SettingsConfigDict(env_prefix="BANGFU_REGISTRY_", extra="ignore")
