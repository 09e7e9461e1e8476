"""Reading past events back from the JetStream streams, for a webhook replay.

The streams keep every event for a year (DESIGN: events), so a replay also reaches events
that reached no delivery of the subscription: published before it existed, or while it
filtered them out.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError
from pydantic import ValidationError

from shared.events.envelope import CloudEvent

STREAMS = ("registry", "verification", "benefits", "notifications")
# An event is stored a little after its `time` (the outbox relay's delay): read this far on.
RELAY_GRACE = timedelta(minutes=1)


class WindowTooLarge(Exception):
    """More events in the window than one replay takes."""


async def events_between(
    js: JetStreamContext, *, since: datetime, until: datetime, limit: int
) -> list[CloudEvent]:
    """Every event of every stream whose `time` is in [since, until), oldest stored first."""
    found: list[CloudEvent] = []
    for service in STREAMS:
        found.extend(await _from_stream(js, service, since=since, until=until, limit=limit))
        if len(found) > limit:
            raise WindowTooLarge(f"more than {limit} events between {since} and {until}")
    return found


async def _from_stream(
    js: JetStreamContext, service: str, *, since: datetime, until: datetime, limit: int
) -> list[CloudEvent]:
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.BY_START_TIME,
        opt_start_time=since.isoformat(),  # type: ignore[arg-type]
        ack_policy=AckPolicy.EXPLICIT,
        inactive_threshold=30,  # an abandoned reader cleans itself up
    )
    try:
        reader = await js.pull_subscribe(
            f"bangfu.{service}.>", stream=service.upper(), config=config
        )
    except NotFoundError:
        return []  # that service has published nothing yet
    found: list[CloudEvent] = []
    try:
        while len(found) <= limit:
            pending = (await reader.consumer_info()).num_pending
            if not pending:
                break
            try:
                messages = await reader.fetch(min(pending, 200), timeout=2)
            except (NatsTimeoutError, TimeoutError):
                break
            for message in messages:
                await message.ack()
                if message.metadata.timestamp >= until + RELAY_GRACE:
                    return found
                try:
                    event = CloudEvent.from_json(message.data)
                except ValidationError:
                    continue  # the consumer's dead-letter path reports these
                if since <= event.time < until:
                    found.append(event)
    finally:
        await reader.unsubscribe()
    return found
