"""Notifications settings, from `BANGFU_NOTIFICATIONS_*` variables."""

from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class NotificationsSettings(ServiceSettings):
    service: ClassVar[str] = "notifications"
    model_config = SettingsConfigDict(env_prefix="BANGFU_NOTIFICATIONS_", extra="ignore")
