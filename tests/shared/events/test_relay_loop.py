"""The relay's loop between passes, without a database or NATS."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import cast

import pytest
from nats.js.client import JetStreamContext

from shared.db import Database
from shared.events.outbox import OutboxRelay


class WokenDuringEachPass(OutboxRelay):
    """A relay whose every pass sees a commit come in, as under a steady load."""

    def __init__(
        self, passes: int, *, pass_seconds: float | None = 0, dialect: str = "sqlite"
    ) -> None:
        # No pacing by default: as when each pass takes longer than `pass_seconds`.
        super().__init__(
            cast(Database, SimpleNamespace(dialect=dialect)),
            cast(JetStreamContext, None),
            pass_seconds=pass_seconds,
        )
        self.passes_left = passes
        self.turns_between_passes: list[int] = []
        self.turns = 0
        self._turns_at_pass_end: int | None = None
        self.done = asyncio.Event()

    async def _pass(self) -> int:
        if self._turns_at_pass_end is not None:
            self.turns_between_passes.append(self.turns - self._turns_at_pass_end)
        await asyncio.sleep(0)  # the pass's I/O: other tasks run meanwhile
        self.wake()  # a commit during the pass
        self.passes_left -= 1
        if self.passes_left == 0:
            self.done.set()
        self._turns_at_pass_end = self.turns
        return 1

    async def _housekeeping(self) -> None:
        pass


async def test_a_relay_woken_during_a_pass_starts_the_next_without_a_turn_of_the_loop() -> None:
    # On a loop busy with writers every turn costs their work: each turn the relay waits
    # between passes delays every event committed meanwhile (bench/events.py).
    relay = WokenDuringEachPass(passes=5)

    async def count_turns() -> None:
        while True:
            relay.turns += 1
            await asyncio.sleep(0)

    counter = asyncio.create_task(count_turns())
    relay.start()
    await asyncio.wait_for(relay.done.wait(), 5)
    await relay.stop()
    counter.cancel()
    assert relay.turns_between_passes[:4] == [0, 0, 0, 0]


async def test_passes_woken_at_once_are_paced_so_that_commits_gather() -> None:
    # A pass per commit spent the producer's CPU on passes and the consumer's on one
    # transaction per event (bench/events.py): passes start at most every `pass_seconds`.
    relay = WokenDuringEachPass(passes=1000, pass_seconds=0.05)
    relay.start()
    await asyncio.sleep(0.3)
    await relay.stop()
    assert 2 <= 1000 - relay.passes_left <= 8


@pytest.mark.parametrize(("dialect", "fewest", "most"), [("sqlite", 2, 16), ("postgresql", 21, 61)])
async def test_by_default_sqlite_paces_passes_at_20_ms_and_postgresql_at_5(
    dialect: str, fewest: int, most: int
) -> None:
    # SQLite's passes take turns with its writers; PostgreSQL's claim beside them, where 20 ms
    # only added to every event's wait (p99 29-33 ms against 11-20 at 5 ms; bench/events.py).
    relay = WokenDuringEachPass(passes=1000, pass_seconds=None, dialect=dialect)
    relay.start()
    await asyncio.sleep(0.3)
    await relay.stop()
    assert fewest <= 1000 - relay.passes_left <= most
