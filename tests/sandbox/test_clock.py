"""The sandbox's clock wakes each waiter at its moment, never before, in order of the moments,
whatever the order they came in; a cancelled waiter does not hold up the others."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

from sandbox.clock import Clock


async def woken_at(clock: Clock, moment: float, woken: list[tuple[float, float]]) -> None:
    await clock.until(moment)
    woken.append((moment, time.monotonic()))


async def test_waiters_wake_at_their_moments_in_order() -> None:
    clock = Clock()
    start = time.monotonic()
    # Later moments first: each earlier one must re-arm the timer sooner.
    offsets = [0.060, 0.045, 0.030, 0.015, 0.0151, 0.002]
    woken: list[tuple[float, float]] = []
    try:
        async with asyncio.timeout(2):
            await asyncio.gather(*(woken_at(clock, start + o, woken) for o in offsets))
    finally:
        clock.close()
    assert [moment for moment, _ in woken] == sorted(start + o for o in offsets)
    assert all(at >= moment for moment, at in woken), woken


async def test_a_cancelled_waiter_leaves_the_others_to_wake() -> None:
    clock = Clock()
    start = time.monotonic()
    woken: list[tuple[float, float]] = []
    first = asyncio.create_task(woken_at(clock, start + 0.02, woken))
    second = asyncio.create_task(woken_at(clock, start + 0.04, woken))
    await asyncio.sleep(0)
    first.cancel()
    try:
        async with asyncio.timeout(2):
            await second
    finally:
        clock.close()
    assert first.cancelled()
    assert [moment for moment, _ in woken] == [start + 0.04]


async def test_a_moment_passed_returns_at_once_and_arms_nothing() -> None:
    clock = Clock()
    await clock.until(time.monotonic() - 1)
    assert clock._armed is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timerfd is Linux's")
async def test_on_linux_a_timerfd_watched_by_the_loop_serves() -> None:
    clock = Clock()
    try:
        await clock.until(time.monotonic() + 0.005)
        assert clock._fd >= 0
        assert clock._loop is asyncio.get_running_loop()
    finally:
        clock.close()
    assert clock._fd == -1
