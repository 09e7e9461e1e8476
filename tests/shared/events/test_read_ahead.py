"""A consumer with `read_ahead` over real NATS: each batch's scope gets what was read ahead for
exactly its own events while the batch before it was handled, every event is handled once and
in order, and a failed read-ahead costs only the head start."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import nats

from shared.db import Database, UnitOfWork
from shared.events.consumer import ConsumerRunner, Subscription
from shared.events.envelope import CloudEvent
from shared.events.streams import ensure_stream
from tests.eventkit import effect_count, effects, record_effect, sample_event


class Recorder:
    """A read-ahead and batch scope that note what they were given."""

    def __init__(self, *, failing: bool = False) -> None:
        self.failing = failing
        self.read: list[tuple[str, ...]] = []
        self.scopes: list[tuple[tuple[str, ...], object]] = []

    async def read_ahead(self, events: list[CloudEvent]) -> object:
        ids = tuple(e.id for e in events)
        self.read.append(ids)
        await asyncio.sleep(0.05)  # another service's answer takes a while
        if self.failing:
            raise RuntimeError("the other service is away")
        return ids

    @contextlib.asynccontextmanager
    async def scope(
        self, events: list[CloudEvent], uow: UnitOfWork, ahead: object
    ) -> AsyncIterator[None]:
        self.scopes.append((tuple(e.id for e in events), ahead))
        yield


async def _consume(nats_url: str, database: Database, recorder: Recorder) -> list[CloudEvent]:
    """Publish 25 events, consume them in batches of 10 until all are handled."""
    stream = f"AHEAD{uuid.uuid4().hex[:8].upper()}"
    subject = f"bangfu.{stream.lower()}.>"
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_stream(js, name=stream, subjects=[subject])
    events = [sample_event(f"household-{n}", 1) for n in range(25)]
    for event in events:
        await js.publish(f"bangfu.{stream.lower()}.x", event.to_json())
    runner = ConsumerRunner(
        database,
        js,
        Subscription(
            f"{stream.lower()}-effects",
            stream,
            [subject],
            record_effect,
            batch=recorder.scope,
            read_ahead=recorder.read_ahead,
        ),
        batch_size=10,
    )
    await runner.start()
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while await effect_count(database) < len(events):
            assert asyncio.get_running_loop().time() < deadline, "not handled within 30 s"
            await asyncio.sleep(0.1)
    finally:
        await runner.stop()
        await nc.close()
    return events


async def test_each_batch_gets_what_was_read_ahead_for_it(
    nats_url: str, database: Database
) -> None:
    recorder = Recorder()
    events = await _consume(nats_url, database, recorder)
    assert [event_id for event_id, _, _ in await effects(database)] == [e.id for e in events]
    handled = [event_id for ids, _ in recorder.scopes for event_id in ids]
    assert handled == [e.id for e in events]
    assert len(recorder.scopes) >= 3  # batches of at most 10
    for ids, ahead in recorder.scopes:
        assert ahead == ids  # its own events' read, none of another batch's
    assert sorted(recorder.read) == sorted(ids for ids, _ in recorder.scopes)


async def test_a_failed_read_ahead_loses_only_the_head_start(
    nats_url: str, database: Database
) -> None:
    recorder = Recorder(failing=True)
    events = await _consume(nats_url, database, recorder)
    assert [event_id for event_id, _, _ in await effects(database)] == [e.id for e in events]
    assert recorder.read and all(ahead is None for _, ahead in recorder.scopes)
