"""NATS connection and JetStream stream provisioning."""

from __future__ import annotations

import ssl

import nats
import structlog
from nats.aio.client import Client as NATS
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.client import JetStreamContext
from nats.js.errors import BadRequestError

log = structlog.get_logger(__name__)

DEAD_LETTER_STREAM = "DLQ"
DEAD_LETTER_PREFIX = "bangfu.dlq"
DAY = 86_400.0


async def connect(url: str, *, name: str, tls: ssl.SSLContext | None = None) -> NATS:
    """Connect and keep reconnecting for ever: the outbox holds events while NATS is away."""

    async def on_disconnected() -> None:
        log.warning("nats.disconnected", url=url)

    async def on_reconnected() -> None:
        log.info("nats.reconnected", url=url)

    async def on_error(exc: Exception) -> None:
        log.warning("nats.error", error=repr(exc))

    return await nats.connect(
        url,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        disconnected_cb=on_disconnected,
        reconnected_cb=on_reconnected,
        error_cb=on_error,
        tls=tls,
    )


def service_stream(service: str) -> tuple[str, list[str]]:
    """The stream a service publishes to and the subjects it captures."""
    return service.upper(), [f"bangfu.{service}.>"]


async def ensure_stream(
    js: JetStreamContext,
    *,
    name: str,
    subjects: list[str],
    max_age_days: float = 365,
    duplicate_window_seconds: float = 120,
    replicas: int = 1,
) -> None:
    """Create the stream, or bring an existing one to this configuration."""
    config = StreamConfig(
        name=name,
        subjects=subjects,
        storage=StorageType.FILE,
        retention=RetentionPolicy.LIMITS,
        max_age=max_age_days * DAY,
        duplicate_window=duplicate_window_seconds,
        num_replicas=replicas,
    )
    try:
        await js.add_stream(config)
    except BadRequestError:
        # Already there with another configuration (say, a longer retention): update it.
        await js.update_stream(config)
    log.info("nats.stream_ready", stream=name, subjects=subjects)


async def ensure_dead_letter_stream(js: JetStreamContext, *, replicas: int = 1) -> None:
    """Where poison messages go, kept for ops to inspect and replay."""
    await ensure_stream(
        js, name=DEAD_LETTER_STREAM, subjects=[f"{DEAD_LETTER_PREFIX}.>"], replicas=replicas
    )
