"""Notifications settings, from `BANGFU_NOTIFICATIONS_*` variables."""

import json
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from services.notifications.domain.destinations import DestinationPolicy
from shared.settings import ServiceSettings


class NotificationsSettings(ServiceSettings):
    service: ClassVar[str] = "notifications"
    calls_registry: ClassVar[bool] = True
    model_config = SettingsConfigDict(env_prefix="BANGFU_NOTIFICATIONS_", extra="ignore")

    # The rules file (which events cause which messages); unset means the packaged one.
    rules_file: Path | None = None
    # Local time of the suite's people: quiet hours and schedule times are in it.
    timezone: str = "Asia/Shanghai"
    # Background workers: off only for a replica that serves the API alone.
    workers: bool = True
    worker_poll_seconds: float = 0.25
    # How often the sent/failed counters are read from the messages (one GROUP BY each time).
    metrics_refresh_seconds: float = 30.0

    # Webhooks: how long a failing delivery is retried before it is dead-lettered.
    webhook_retry_seconds: float = 24 * 3600
    webhook_backoff_base_seconds: float = 1.0
    webhook_backoff_cap_seconds: float = 600.0
    webhook_timeout_seconds: float = 10.0
    webhook_concurrency: int = 50
    webhook_batch_size: int = 500
    # Internal networks webhooks may reach (CIDRs, comma-separated or a JSON list): a department
    # system inside the province's network. Any other private, loopback, link-local, multicast
    # or reserved destination is refused, at registration and at every connection.
    webhook_allowed_networks: Annotated[list[IPv4Network | IPv6Network], NoDecode] = []

    # Follow-up schedules (每月至少入户走访一次).
    visit_reminder_days: int = 7  # before the month ends, if nobody has visited yet
    visit_overdue_days: int = 5  # after the month ended: the county office is told
    recheck_interval_days: int = 365
    schedule_hour: int = 9  # local hour a schedule fires on its day
    scheduler_batch_size: int = 100
    # A schedule whose firing fails is tried again after min(cap, base × 2^(attempt−1)), at most
    # `scheduler_max_attempts` times in all; then it ends `failed` with the reason.
    scheduler_max_attempts: int = Field(default=5, ge=1)
    scheduler_backoff_base_seconds: float = 60.0
    scheduler_backoff_cap_seconds: float = 3600.0
    # A name for this replica in the schedule log (which replica fired what).
    replica: str = ""

    # SMS through an HTTP gateway (the sandbox in development: `python -m sandbox.sms`).
    sms_gateway_url: str = "http://127.0.0.1:8191"
    sms_gateway_key: SecretStr | None = None
    sms_quiet_start_hour: int = 22
    sms_quiet_end_hour: int = 8
    sms_per_recipient_per_day: int = 3
    message_max_attempts: int = 5
    # A failed SMS or email waits a random ½–1 × min(cap, base × 2^(attempt−1)) before the next.
    message_backoff_base_seconds: float = 5.0
    message_backoff_cap_seconds: float = 600.0
    # How often the gateway is asked about SMS it has not yet reported delivered or failed.
    sms_report_poll_seconds: float = 5.0

    # Email through SMTP (a local aiosmtpd server in development).
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 8125
    smtp_timeout_seconds: float = 10.0
    email_from: str = "bangfu-notifications@localhost"
    # `{"county_office:411302": "jiekun@county.example"}`; others go to `<kind>-<id>@<domain>`.
    email_addresses: dict[str, str] = {}
    email_domain: str = "bangfu.local"

    def destination_policy(self) -> DestinationPolicy:
        """Where webhooks may go: public addresses and the allowed networks."""
        return DestinationPolicy(tuple(self.webhook_allowed_networks))

    @field_validator("webhook_allowed_networks", mode="before")
    @classmethod
    def _split_networks(cls, value: Any) -> Any:
        """`10.20.0.0/16,fd00:20::/32` or `["10.20.0.0/16"]` from the environment."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value
