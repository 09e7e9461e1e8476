"""`bangfu events tail`: an ordered consumer per stream, filtered by subject or region."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import nats
from nats.js.api import ConsumerConfig, DeliverPolicy

from shared.events.envelope import region_filter
from shared.events.streams import nats_servers
from shared.migrations import SERVICES
from shared.regions import normalize_prefix


def tail_filters(*, subject: str | None, region: str | None) -> dict[str, str]:
    """Stream name -> subject filter for the streams the filter can touch."""
    if subject and region:
        raise ValueError("give --subject or --region, not both")
    if subject:
        parts = subject.split(".")
        if parts[0] != "bangfu" or len(parts) < 2:
            raise ValueError("a subject filter starts with 'bangfu.' (e.g. bangfu.registry.>)")
        if parts[1] == ">":
            return {s.upper(): f"bangfu.{s}.>" for s in SERVICES}
        services = SERVICES if parts[1] == "*" else (parts[1],)
        rest = ".".join(parts[2:]) or ">"
        return {s.upper(): f"bangfu.{s}.{rest}" for s in services}
    suffix = region_filter(normalize_prefix(region)) if region else "*.*.*"
    return {s.upper(): f"bangfu.{s}.*.*.{suffix}" for s in SERVICES}


async def tail_events(
    url: str,
    filters: dict[str, str],
    *,
    since: datetime | None,
    count: int,
    emit: Callable[[dict[str, Any]], None],
) -> None:
    """Emit every event matching `filters`, from now (or from `since`), until `count` events."""
    try:
        nc = await nats.connect(nats_servers(url), connect_timeout=5, max_reconnect_attempts=3)
    except Exception as exc:  # noqa: BLE001 - any failure to connect means the same to a user
        raise ConnectionError(f"cannot reach NATS at {url}: is `bangfu up` running?") from exc
    # The JetStream API's 5 s default is short for a busy suite (the demo seeding, a CI run):
    # the tail then died of a timeout before its first event.
    js = nc.jetstream(timeout=30)
    done = asyncio.Event()
    seen = 0

    async def on_message(message: Any) -> None:
        nonlocal seen
        if count and seen >= count:
            return
        try:
            emit(json.loads(message.data))
        except json.JSONDecodeError:
            emit({"undecodable": message.data.decode(errors="replace"), "subject": message.subject})
        seen += 1
        if count and seen >= count:
            done.set()

    existing = {info.config.name for info in await js.streams_info()}
    for stream, subject in filters.items():
        if stream not in existing:
            continue
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_TIME if since else DeliverPolicy.NEW,
            opt_start_time=since.isoformat() if since else None,  # type: ignore[arg-type]
        )
        await js.subscribe(
            subject, stream=stream, cb=on_message, ordered_consumer=True, config=config
        )
    try:
        await done.wait()
    finally:
        await nc.close()
