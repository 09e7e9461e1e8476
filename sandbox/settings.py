"""Sandbox settings, from `BANGFU_SANDBOX_*` variables."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sandbox.behaviour import Behaviour
from sandbox.departments import DEPARTMENTS
from shared.identity import DEVELOPMENT_FEED_KEY
from shared.settings import DEFAULT_PORTS, SuiteSettings


def _suite_nats_url() -> str:
    return SuiteSettings().nats_url


class SandboxSettings(BaseSettings):
    """Where the sandbox listens, its NATS, and each department's latency and faults."""

    model_config = SettingsConfigDict(env_prefix="BANGFU_SANDBOX_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORTS["sandbox"]
    # The suite's NATS by default; empty switches request-reply and the change feeds off.
    nats_url: str = Field(default_factory=_suite_nats_url)
    queue_group: str = "sandbox"
    # `{"tax": {"latency_ms": {"uniform": [10, 200]}, "fault": "http_500", "fault_rate": 0.1}}`
    faults: dict[str, Behaviour] = Field(default_factory=dict)
    # Set: which queries fault depends only on (seed, department, identity number).
    seed: int | None = None
    # How long a "timeout" fault keeps an HTTP caller waiting before a late answer.
    timeout_seconds: float = 60.0
    # The HMAC key of `person_index` in change events; consumers hold the same key.
    person_index_key: SecretStr = SecretStr(DEVELOPMENT_FEED_KEY)

    @field_validator("faults")
    @classmethod
    def _known_departments(cls, faults: dict[str, Behaviour]) -> dict[str, Behaviour]:
        unknown = sorted(set(faults) - set(DEPARTMENTS))
        if unknown:
            raise ValueError(
                f"BANGFU_SANDBOX_FAULTS names unknown departments {unknown}; "
                f"known: {', '.join(DEPARTMENTS)}"
            )
        return faults
