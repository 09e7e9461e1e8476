"""SIGKILL of the broker in the middle of a stream of events: none lost, none handled twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.db import Database
from shared.events.consumer import ConsumerRunner, Subscription
from shared.events.outbox import OutboxRelay, backlog
from shared.events.streams import connect, ensure_dead_letter_stream, ensure_stream
from shared.natsserver import NatsServer, free_port
from tests.eventkit import (
    effect_count,
    effects,
    record_effect,
    sample_event,
)

TOTAL = 2000
AGGREGATES = 50


@pytest.fixture
def broker(tmp_path: Path) -> AsyncIterator[NatsServer]:
    server = NatsServer(
        port=free_port(), store_dir=tmp_path / "nats", log_file=tmp_path / "nats.log"
    )
    server.start()
    yield server
    server.stop()


async def _wait_until(db: Database, count: int, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while await effect_count(db) < count:
        assert asyncio.get_running_loop().time() < deadline, (
            f"only {await effect_count(db)} of {count} handled in {timeout}s"
        )
        await asyncio.sleep(0.05)


class TestBrokerKilled:
    async def test_sigkill_mid_stream_then_restart_loses_nothing_and_handles_nothing_twice(
        self,
        database: Database,
        broker: NatsServer,
    ) -> None:
        nc = await connect(broker.url, name="chaos")
        js = nc.jetstream()
        await ensure_stream(js, name="REGISTRY", subjects=["bangfu.registry.>"])
        await ensure_dead_letter_stream(js)
        relay = OutboxRelay(database, js, batch_size=100, poll_seconds=0.05, publish_timeout=1)
        database.after_commit = relay.wake
        runner = ConsumerRunner(
            database,
            js,
            Subscription("chaos", "REGISTRY", ["bangfu.registry.>"], record_effect),
            ack_wait_seconds=2,
            max_deliver=100,
        )
        relay.start()
        await runner.start()

        a_third_written = asyncio.Event()

        async def write_all() -> None:
            for start in range(0, TOTAL, 10):
                if start >= TOTAL // 3:
                    a_third_written.set()
                async with database.unit_of_work() as uow:
                    uow.publish(
                        *(
                            sample_event(f"h-{i % AGGREGATES}", i // AGGREGATES + 1)
                            for i in range(start, start + 10)
                        )
                    )
                    await uow.commit()
                await asyncio.sleep(0.003)

        writer = asyncio.create_task(write_all())
        try:
            await asyncio.wait_for(a_third_written.wait(), timeout=30)
            broker.kill()
            assert not writer.done(), "the broker must die in the middle of the stream"
            assert await effect_count(database) < TOTAL
            await asyncio.sleep(1.5)  # events keep being committed while the broker is down
            broker.start()
            await writer
            await _wait_until(database, TOTAL, timeout=90)
            await asyncio.sleep(3)  # time enough for any redelivery to show up twice
        finally:
            writer.cancel()
            await runner.stop()
            await relay.stop()
            await nc.close()

        handled = await effects(database)
        ids = [event_id for event_id, _, _ in handled]
        assert len(ids) == TOTAL
        assert len(set(ids)) == TOTAL
        async with database.sessionmaker() as session:
            assert (await backlog(session)).count == 0
