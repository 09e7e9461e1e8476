"""A consumer with `wanted` over real NATS: the events it leaves out are acknowledged with no
inbox row and no handling, the others are handled once and in order, alone or in a batch,
and a `wanted` that fails keeps every event."""

from __future__ import annotations

import asyncio
import uuid

import nats
from sqlalchemy import select

from shared.db import Database, UnitOfWork
from shared.events.consumer import ConsumerRunner, Subscription, Wanted, inbox
from shared.events.envelope import CloudEvent
from shared.events.streams import ensure_stream
from tests.eventkit import effects, record_effect, sample_event


async def even_sequences(events: list[CloudEvent], uow: UnitOfWork) -> set[str]:
    """Wanted: the events of even sequence."""
    return {e.id for e in events if e.sequence % 2 == 0}


async def failing(events: list[CloudEvent], uow: UnitOfWork) -> set[str]:
    raise RuntimeError("cannot tell")


async def _consume(
    nats_url: str, database: Database, events: list[CloudEvent], wanted: Wanted, *, batch: int
) -> tuple[int, int]:
    """Publish the events, consume until the consumer has acknowledged every one of them;
    its pending and unacknowledged counts then."""
    stream = f"WANTED{uuid.uuid4().hex[:8].upper()}"
    subject = f"bangfu.{stream.lower()}.>"
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_stream(js, name=stream, subjects=[subject])
    for event in events:
        await js.publish(f"bangfu.{stream.lower()}.x", event.to_json())
    name = f"{stream.lower()}-effects"
    runner = ConsumerRunner(
        database,
        js,
        Subscription(name, stream, [subject], record_effect, wanted=wanted),
        batch_size=batch,
    )
    await runner.start()
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            info = await js.consumer_info(stream, name)
            if info.delivered.stream_seq == len(events) and not info.num_ack_pending:
                return info.num_pending or 0, info.num_ack_pending or 0
            assert asyncio.get_running_loop().time() < deadline, "not acknowledged within 30 s"
            await asyncio.sleep(0.05)
    finally:
        await runner.stop()
        await nc.close()


async def _inbox(database: Database) -> set[str]:
    async with database.sessionmaker() as session:
        return set((await session.execute(select(inbox.c.event_id))).scalars())


async def test_a_batch_handles_only_the_wanted_and_acknowledges_the_rest(
    nats_url: str, database: Database
) -> None:
    events = [sample_event(f"household-{n}", n) for n in range(1, 21)]
    assert await _consume(nats_url, database, events, even_sequences, batch=10) == (0, 0)
    kept = [e.id for e in events if e.sequence % 2 == 0]
    assert [event_id for event_id, _, _ in await effects(database)] == kept
    assert await _inbox(database) == set(kept)


async def test_an_unwanted_event_alone_is_acknowledged_without_an_inbox_row(
    nats_url: str, database: Database
) -> None:
    events = [sample_event("household-1", 1)]
    assert await _consume(nats_url, database, events, even_sequences, batch=1) == (0, 0)
    assert await effects(database) == []
    assert await _inbox(database) == set()


async def test_a_failing_wanted_keeps_every_event(nats_url: str, database: Database) -> None:
    events = [sample_event(f"household-{n}", n) for n in range(1, 6)]
    assert await _consume(nats_url, database, events, failing, batch=10) == (0, 0)
    assert [event_id for event_id, _, _ in await effects(database)] == [e.id for e in events]
    assert await _inbox(database) == {e.id for e in events}
