"""Benchmark of webhook fan-out: events to 50 local receivers, against raw httpx posting.

Run: `.venv/bin/python bench/notifications.py [--events N] [--receivers R]
[--database-url postgresql+asyncpg://...]`. Not a test: it asserts nothing, it prints figures.

The receivers are R small HTTP servers (uvicorn, a bare ASGI app answering 204) in one child
process, as department systems would be other machines; they count what they receive in
shared memory. Each run posts the same N × R bodies (CloudEvents, one per event and receiver):

1. Baseline: raw httpx. An `AsyncClient` per receiver, each with the worker's connection
   limits (the worker keeps a pool per origin), posts every body, at most
   `webhook_concurrency` at a time in all (the worker's setting, 50, or `--concurrency`).
   deliveries/s = N × R / wall time.
2. Ours: R webhook subscriptions (one per receiver) in a migrated notifications database
   (SQLite by default, a fresh PostgreSQL schema with `--database-url`). Events are fanned out
   as the service's consumer does (`webhooks.fan_out`, 50 events per transaction: a consumer's
   batch) while the `DeliveryWorker` with default settings leases, signs, posts and records
   them (a delivery log row and an attempt row each). deliveries/s = N × R / (first fan-out
   commit -> the receivers have counted every delivery).
   Per delivery, the time from queued (its row written by the fan-out) to recorded delivered
   (the worker's transaction after the 2xx), read back from the delivery log; in this
   saturating run its p99 is mostly time spent waiting behind the backlog.
3. Paced: the same pipeline offered half the best throughput of (2), one event (R
   deliveries) at a time for 10 s; its p99 of queued -> delivered is the `p99_ms` reported.

The runs alternate (baseline, ours, baseline, ours) and the best of each is kept, so that a
burst of load from elsewhere on the machine does not decide the ratio.
Last line: `ratio <x> deliveries/s <n> p99_ms <n>` (ratio and deliveries/s from the best runs,
p99 from the paced run); goal: a ratio of at least 0.7.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select, text

from services.notifications import store, webhooks
from services.notifications.delivery import DeliveryWorker
from services.notifications.settings import NotificationsSettings
from shared.auth import Principal
from shared.db import Database, as_utc, create_engine
from shared.events.envelope import new_event
from shared.migrations import upgrade
from shared.natsserver import die_with_parent, free_port
from shared.observability import configure_logging
from shared.settings import SuiteSettings

FAN_OUT_BATCH = 50
RUN_TIMEOUT = 120.0


def _serve_receivers(ports: list[int], received: Synchronized[int], ready: Any) -> None:
    """The child process: R uvicorn servers sharing one bare ASGI app."""
    import uvicorn

    die_with_parent()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        with received.get_lock():
            received.value += 1
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def main() -> None:
        servers = [
            uvicorn.Server(
                uvicorn.Config(
                    app,
                    host="127.0.0.1",
                    port=port,
                    log_level="error",
                    access_log=False,
                    lifespan="off",
                )
            )
            for port in ports
        ]
        tasks = [asyncio.create_task(s.serve()) for s in servers]
        while not all(s.started for s in servers):
            await asyncio.sleep(0.05)
        ready.set()
        await asyncio.gather(*tasks)

    asyncio.run(main())


def _events(count: int) -> list[Any]:
    """N household events in a few Nanyang counties, each for its own household."""
    regions = ("411302", "411303", "411321", "411328")
    return [
        new_event(
            service="registry",
            aggregate="household",
            name="visit_recorded",
            subject=f"hh-{i:06d}",
            region=regions[i % len(regions)],
            sequence=i,
            data={
                "household_id": f"hh-{i:06d}",
                "visit_id": str(uuid.uuid4()),
                "visited_on": "2026-11-20",
                "helper_id": f"H{i % 97:03d}",
                "follow_up_needed": False,
            },
        )
        for i in range(count)
    ]


async def _wait_for(received: Synchronized[int], target: int, *, timeout: float) -> bool:
    deadline = time.perf_counter() + timeout
    while received.value < target:
        if time.perf_counter() > deadline:
            return False
        await asyncio.sleep(0.002)
    return True


async def baseline(
    urls: list[str], bodies: list[bytes], received: Synchronized[int], concurrency: int
) -> float:
    """Raw httpx: every body to every receiver, `concurrency` at a time, through a client per
    receiver as the worker has a pool per origin (one client for all 50 spent most of its CPU
    placing each request among all their connections); deliveries/s."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    gate = asyncio.Semaphore(concurrency)
    start_count = received.value
    total = len(urls) * len(bodies)
    async with contextlib.AsyncExitStack() as stack:
        clients = {
            url: await stack.enter_async_context(httpx.AsyncClient(limits=limits, timeout=10))
            for url in urls
        }

        async def post(url: str, body: bytes) -> None:
            async with gate:
                response = await clients[url].post(
                    url, content=body, headers={"Content-Type": "application/cloudevents+json"}
                )
                response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(post(url, body) for body in bodies for url in urls))
        await _wait_for(received, start_count + total, timeout=RUN_TIMEOUT)
        return total / (time.perf_counter() - started)


@contextlib.asynccontextmanager
async def notifications_database(url: str | None, home: Path) -> AsyncIterator[Database]:
    """A migrated notifications database: a SQLite file, or a fresh PostgreSQL schema."""
    if url is None:
        db_url, schema = (
            f"sqlite+aiosqlite:///{home / f'notifications-{uuid.uuid4().hex}.db'}",
            None,
        )
    else:
        db_url, schema = url, f"bench_notifications_{uuid.uuid4().hex[:10]}"
    await asyncio.to_thread(upgrade, "notifications", url=db_url, schema=schema)
    db = Database(db_url, schema=schema)
    try:
        yield db
    finally:
        await db.dispose()
        if schema:
            admin = create_engine(db_url)
            async with admin.begin() as connection:
                await connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            await admin.dispose()


async def ours(
    settings: NotificationsSettings,
    database_url: str | None,
    home: Path,
    urls: list[str],
    events: list[Any],
    received: Synchronized[int],
    *,
    events_per_second: float = 0,
) -> tuple[float, float, bool]:
    """Fan-out and the delivery worker; (deliveries/s, p99 ms queued -> delivered, complete).

    With `events_per_second`, events are fanned out one at a time on that schedule (a paced
    load) instead of in batches as fast as possible.
    """
    async with notifications_database(database_url, home) as db:
        principal = Principal("bench", frozenset({"notifications:admin"}), ("41",))
        keyring = settings.keyring()
        now = datetime.now(UTC)
        async with db.unit_of_work() as uow:
            for url in urls:
                await webhooks.register_subscription(
                    uow,
                    principal=principal,
                    keyring=keyring,
                    destinations=settings.destination_policy(),
                    url=url,
                    secret="bench-secret-0123456789",
                    event_types=["cn.bangfu.registry.*"],
                    regions=None,
                    department=None,
                    now=now,
                )
            await uow.commit()
        worker = DeliveryWorker(db, settings, keyring)
        total = len(urls) * len(events)
        start_count = received.value
        started = time.perf_counter()
        worker.start()
        batch = 1 if events_per_second else FAN_OUT_BATCH
        for first in range(0, len(events), batch):
            if events_per_second:
                await asyncio.sleep(
                    max(0.0, started + first / events_per_second - time.perf_counter())
                )
            async with db.unit_of_work() as uow:
                for event in events[first : first + batch]:
                    await webhooks.fan_out(uow, event, now=datetime.now(UTC))
                await uow.commit()
            worker.wake()
        complete = await _wait_for(received, start_count + total, timeout=RUN_TIMEOUT)
        elapsed = time.perf_counter() - started
        # Let the last batch's outcome be recorded before reading the log back.
        deadline = time.perf_counter() + 30
        while time.perf_counter() < deadline:
            async with db.unit_of_work() as uow:
                done = (
                    await uow.session.execute(
                        select(func.count()).where(store.webhook_delivery.c.status == "delivered")
                    )
                ).scalar_one()
            if done >= total:
                break
            await asyncio.sleep(0.05)
        await worker.stop()
        async with db.unit_of_work() as uow:
            rows = (
                await uow.session.execute(
                    select(
                        store.webhook_delivery.c.created_at, store.webhook_delivery.c.finished_at
                    ).where(store.webhook_delivery.c.status == "delivered")
                )
            ).all()
        latencies = sorted((as_utc(f) - as_utc(c)).total_seconds() * 1000 for c, f in rows)
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else 0.0
        return (received.value - start_count) / elapsed, p99, complete


async def main(args: argparse.Namespace) -> None:
    configure_logging(level="WARNING", json=True)
    ports = [free_port() for _ in range(args.receivers)]
    urls = [f"http://127.0.0.1:{port}/hook" for port in ports]
    context = multiprocessing.get_context("spawn")
    received: Synchronized[int] = context.Value("q", 0)  # type: ignore[assignment]
    ready = context.Event()
    child = context.Process(target=_serve_receivers, args=(ports, received, ready), daemon=True)
    child.start()
    if not ready.wait(60):
        raise SystemExit("the receivers did not start")
    events = _events(args.events)
    bodies = [event.to_json() for event in events]
    with tempfile.TemporaryDirectory(prefix="bangfu-bench-") as home_dir:
        home = Path(home_dir)
        # The receivers listen on loopback, which the shipped destination policy refuses.
        settings = NotificationsSettings(
            suite=SuiteSettings(home=home / "home"), webhook_allowed_networks=["127.0.0.0/8"]
        )
        if args.concurrency:
            settings = settings.model_copy(update={"webhook_concurrency": args.concurrency})
        print(
            f"webhook fan-out: {args.events} events x {args.receivers} receivers = "
            f"{args.events * args.receivers} deliveries; database "
            f"{'postgresql' if args.database_url else 'sqlite'}; load average "
            + ", ".join(f"{x:.2f}" for x in os.getloadavg())
        )
        raw_rates, our_runs = [], []
        for round_ in range(args.rounds):
            raw = await baseline(urls, bodies, received, settings.webhook_concurrency)
            rate, p99, complete = await ours(
                settings, args.database_url, home, urls, events, received
            )
            raw_rates.append(raw)
            our_runs.append((rate, p99, complete))
            print(
                f"round {round_ + 1}: baseline (raw httpx) {raw:8.0f} deliveries/s   "
                f"ours {rate:8.0f} deliveries/s  p99 {p99:6.0f} ms"
                + ("" if complete else "  INCOMPLETE")
            )
        best_raw = max(raw_rates)
        best_rate, best_p99, _ = max(our_runs)
        # Latency without a queue: half the throughput just measured, for PACED_SECONDS.
        offered = best_rate / 2
        per_second = offered / args.receivers
        paced = events[: max(1, int(per_second * args.paced_seconds))]
        _, paced_p99, complete = await ours(
            settings, args.database_url, home, urls, paced, received, events_per_second=per_second
        )
        print(
            f"paced: {offered:.0f} deliveries/s offered for {args.paced_seconds:g} s, "
            f"p99 {paced_p99:.0f} ms queued -> delivered" + ("" if complete else "  INCOMPLETE")
        )
    child.terminate()
    ratio = best_rate / best_raw
    print(
        f"best: baseline {best_raw:.0f} deliveries/s, ours {best_rate:.0f} deliveries/s "
        f"(p99 {best_p99:.0f} ms at saturation: time queued behind the backlog)"
    )
    print(f"ratio {ratio:.2f} deliveries/s {best_rate:.0f} p99_ms {paced_p99:.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--receivers", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--paced-seconds", type=float, default=10, help="length of the paced run")
    parser.add_argument("--concurrency", type=int, default=0, help="default: the setting's")
    parser.add_argument("--database-url", default=None)
    try:
        import uvloop  # the service runs under uvicorn, which uses uvloop when installed
    except ImportError:
        asyncio.run(main(parser.parse_args()))
    else:
        uvloop.run(main(parser.parse_args()))
