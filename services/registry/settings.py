"""Registry settings, from `BANGFU_REGISTRY_*` variables."""

from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class RegistrySettings(ServiceSettings):
    service: ClassVar[str] = "registry"
    model_config = SettingsConfigDict(env_prefix="BANGFU_REGISTRY_", extra="ignore")

    # 公示 period in days by region prefix (JSON, e.g. {"": 7, "4113": 5}); "" is the default.
    notice_days: dict[str, int] = {"": 7}
