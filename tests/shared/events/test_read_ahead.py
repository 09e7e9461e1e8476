"""A consumer with `read_ahead` over real NATS: each batch's scope gets what was read ahead for
exactly its own events while the batch before it was handled, every event is handled once and
in order, a failed read-ahead costs only the head start, and work a scope does at its exit
that fails sends the batch one by one, where a poison message is dead-lettered alone."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import nats
import nats.errors
from nats.aio.msg import Msg

from shared.db import Database, UnitOfWork
from shared.events.consumer import ConsumerRunner, Subscription, dead_letter_subject
from shared.events.envelope import CloudEvent
from shared.events.streams import DEAD_LETTER_STREAM, ensure_dead_letter_stream, ensure_stream
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


class Deferring:
    """A handler that leaves its effect to the batch scope's exit, as benefits' does; the event
    of sequence 3 fails wherever it is handled."""

    def __init__(self) -> None:
        self.pending: list[CloudEvent] | None = None

    @contextlib.asynccontextmanager
    async def scope(
        self, events: list[CloudEvent], uow: UnitOfWork, ahead: object
    ) -> AsyncIterator[None]:
        self.pending = []
        try:
            yield
            for event in self.pending:
                await self.effect(event, uow)
        finally:
            self.pending = None

    async def handler(self, event: CloudEvent, uow: UnitOfWork) -> None:
        if self.pending is not None:
            self.pending.append(event)
            return
        await self.effect(event, uow)

    async def effect(self, event: CloudEvent, uow: UnitOfWork) -> None:
        if event.sequence == 3:
            raise RuntimeError("bad data")
        await record_effect(event, uow)

    async def read_ahead(self, events: list[CloudEvent]) -> object:
        return None


async def test_a_failure_at_the_scopes_exit_sends_the_batch_one_by_one(
    nats_url: str, database: Database
) -> None:
    stream = f"AHEAD{uuid.uuid4().hex[:8].upper()}"
    subject = f"bangfu.{stream.lower()}.>"
    name = f"{stream.lower()}-deferring"
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_stream(js, name=stream, subjects=[subject])
    await ensure_dead_letter_stream(js)
    events = [sample_event("household-1", n) for n in range(1, 7)]
    for event in events:
        await js.publish(f"bangfu.{stream.lower()}.x", event.to_json())
    deferring = Deferring()
    runner = ConsumerRunner(
        database,
        js,
        Subscription(
            name,
            stream,
            [subject],
            deferring.handler,
            batch=deferring.scope,
            read_ahead=deferring.read_ahead,
        ),
        batch_size=10,
        max_deliver=2,
        retry_delays=(0.05,),
    )
    await runner.start()
    dead: list[Msg] = []
    try:
        pull = await js.pull_subscribe(dead_letter_subject(name), stream=DEAD_LETTER_STREAM)
        deadline = asyncio.get_running_loop().time() + 30
        while not dead:
            assert asyncio.get_running_loop().time() < deadline, "no dead letter within 30 s"
            try:
                dead = await pull.fetch(1, timeout=1)
            except nats.errors.TimeoutError:
                continue
        while await effect_count(database) < 5:
            assert asyncio.get_running_loop().time() < deadline, "not handled within 30 s"
            await asyncio.sleep(0.1)
    finally:
        await runner.stop()
        await nc.close()
    # The failed batch left nothing: each of the others took effect once, alone.
    assert sorted(seq for _, _, seq in await effects(database)) == [1, 2, 4, 5, 6]
    assert CloudEvent.from_json(dead[0].data).sequence == 3
