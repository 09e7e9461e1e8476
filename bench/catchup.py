"""Benchmark of catch-up: benefits holding a backlog of households filed while it was stopped.

Run: `.venv/bin/python bench/catchup.py [--households N] [--baseline-households B]
[--database-url URL]`. Not a test: it asserts nothing and prints figures (several minutes with
the defaults on 2 cores).

Everything runs for real, each in a process of its own on loopback: a nats-server from the
wheel, the registry and the benefits service (uvicorn, SQLite files, or fresh schemas of one
PostgreSQL database with `--database-url`, dropped at the end).

1. N households (10,000) of two members each are filed with the registry's own use case
   (`service.apply`, 200 to a transaction; not timed) while benefits is stopped; once the
   registry runs, their `household.applied` events wait in the REGISTRY stream.
2. Baseline: benefits reading each household on its own (`registry_batch_reads=false`: a clear
   read and its declarations, two calls per event, the way before the batch read), on a fresh
   database, from its start until it has handled the first B events (500); then stopped and
   its durable consumer deleted.
3. Ours: benefits with its default settings, on a fresh database, from its start until it has
   handled all N events.

An event counts as handled when the consumer's ack floor passes it: it is acked only after its
transaction (inputs held, card decided) committed. The households held with a card are counted
in the database afterwards. households/s = events handled / seconds from the process's start
(start-up included, as an operator waiting for it would count). ratio = ours / baseline. Goal:
all N = 10,000 within 60 s. The last line is `ratio <x> households/s <n> seconds <n>`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import date, timedelta
from pathlib import Path

import httpx
import nats
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError
from sqlalchemy import text

from services.registry import service as registry
from services.registry.domain.household import Category, Cause, Location
from services.registry.domain.members import EducationStage, Relation
from services.registry.domain.workflow import Channel
from services.registry.schemas import MemberIn
from services.registry.settings import RegistrySettings
from shared.auth import Principal
from shared.db import Database, create_engine
from shared.identity import check_character
from shared.migrations import upgrade
from shared.natsserver import NatsServer, die_with_parent, free_port
from shared.settings import SuiteSettings

ROOT = Path(__file__).resolve().parents[1]
CONSUMER = "benefits-household"


def identity(n: int) -> str:
    """A distinct valid number for each n (serials 100–999 per birth date)."""
    birth = date(1950, 1, 1) + timedelta(days=n // 900)
    body = f"411302{birth:%Y%m%d}{n % 900 + 100:03d}"
    return body + check_character(body)


class Suite:
    """nats-server, the registry and benefits in processes of their own, and their databases."""

    def __init__(self, args: argparse.Namespace, home: Path):
        self.args, self.home = args, home
        self.nats = NatsServer(
            port=free_port(), store_dir=home / "nats", log_file=home / "nats.log"
        )
        self.ports = {"registry": free_port(), "benefits": free_port()}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.schemas: list[str] = []

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def database(self, name: str) -> tuple[str, str | None]:
        """A fresh database for `name` (a file, or a schema of the PostgreSQL database)."""
        if self.args.database_url:
            return self.args.database_url, f"bench_catchup_{name}_{os.getpid()}"
        return f"sqlite+aiosqlite:///{self.home / (name + '.db')}", None

    async def migrate(self, service: str, name: str) -> tuple[str, str | None]:
        url, schema = self.database(name)
        if schema:
            self.schemas.append(schema)
        await asyncio.to_thread(upgrade, service, url=url, schema=schema)
        return url, schema

    def start(self, service: str, url: str, schema: str | None, **settings: str) -> float:
        """Start the service; the monotonic time it was started at, once it answers."""
        prefix = f"BANGFU_{service.upper()}_"
        env = {
            **os.environ,
            "BANGFU_HOME": str(self.home),
            "BANGFU_NATS_URL": self.nats.url,
            "BANGFU_RATE_LIMIT_PER_SECOND": "0",
            "BANGFU_LOG_LEVEL": "WARNING",
            f"{prefix}PORT": str(self.ports[service]),
            f"{prefix}DATABASE_URL": url,
            **({f"{prefix}DATABASE_SCHEMA": schema} if schema else {}),
            **{f"{prefix}{key.upper()}": value for key, value in settings.items()},
        }
        log = open(self.home / f"{service}.log", "ab")  # noqa: SIM115 - closed with the process
        started = time.monotonic()
        self.processes[service] = subprocess.Popen(
            [sys.executable, "-m", f"services.{service}"],
            env=env,
            stdout=log,
            stderr=log,
            cwd=ROOT,
            preexec_fn=die_with_parent,
        )
        deadline = started + 60
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url(service)}/healthz", timeout=1).status_code == 200:
                    return started
            if self.processes[service].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{service} did not start; see {self.home / service}.log")
            time.sleep(0.05)

    def stop(self, service: str) -> None:
        process = self.processes.pop(service)
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:  # a graceful shutdown waiting on idle connections
            process.kill()
            process.wait()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Suite]:
        self.nats.start()
        try:
            url, schema = await self.migrate("registry", "registry")
            filing = await file_backlog(self, url, schema, self.args.households)
            print(f"backlog: {self.args.households:,} households filed at {filing:.0f}/s")
            self.start("registry", url, schema)
            yield self
        finally:
            for service in list(self.processes):
                self.stop(service)
            self.nats.stop()
            if self.schemas:
                await drop_schemas(self.args.database_url, self.schemas)


async def drop_schemas(url: str, schemas: list[str]) -> None:
    engine = create_engine(url)
    async with engine.begin() as connection:
        for schema in schemas:
            await connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    await engine.dispose()


async def file_backlog(suite: Suite, url: str, schema: str | None, count: int) -> float:
    """File `count` households of a head and a child through the registry's own use case,
    200 to a transaction (HTTP filing is not what is measured, and on a busy machine it took
    longer than the catch-up); their events wait in its outbox. Households filed per second."""
    settings = RegistrySettings(
        suite=SuiteSettings(home=suite.home), database_url=url, database_schema=schema
    )
    ctx = registry.Context(
        principal=Principal("bench", frozenset({"registry:write"}), ("41",)),
        keyring=settings.keyring(),
        today=date.today(),
    )
    db = Database(url, schema=schema)
    started = time.monotonic()
    try:
        for first in range(0, count, 200):
            async with db.unit_of_work() as uow:
                for n in range(first, min(first + 200, count)):
                    await registry.apply(
                        uow,
                        ctx,
                        location=Location(region="411302", address="建设路12号"),
                        hukou_type="urban",
                        category=Category.DIBAO,
                        flags=frozenset(),
                        causes=frozenset({Cause.ILLNESS}),
                        channel=Channel.PLACE,
                        submitted_by=None,
                        members=[member(2 * n, "head"), member(2 * n + 1, "child")],
                    )
                await uow.commit()
    finally:
        await db.dispose()
    return count / (time.monotonic() - started)


def member(n: int, relation: str) -> dict[str, object]:
    """A member as the registry's API hands it to the use case (every field, defaults)."""
    stage = EducationStage.PRIMARY if relation == "child" else EducationStage.NONE
    spec = MemberIn(
        name="张三明",
        identity_number=identity(n),
        relation=Relation(relation),
        education_stage=stage,
    )
    return spec.model_dump()


async def wait_for_backlog(nats_url: str, count: int, timeout: float = 300) -> None:
    """Until the registry's relay has published the `count` applied events."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    deadline = time.monotonic() + timeout
    while (await js.stream_info("REGISTRY")).state.messages < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the REGISTRY stream did not reach {count} events")
        await asyncio.sleep(0.2)
    await nc.close()


async def acked(js: JetStreamContext) -> int:
    """How far benefits has handled the stream: every event up to this one is acked, each
    after its transaction (inputs held and card decided) committed."""
    try:
        info = await js.consumer_info("REGISTRY", CONSUMER)
    except NotFoundError:  # not created yet: the service is still starting
        return 0
    return info.ack_floor.stream_seq if info.ack_floor and info.ack_floor.stream_seq else 0


async def catch_up(suite: Suite, name: str, target: int, **settings: str) -> tuple[float, int]:
    """Start benefits on a fresh database; seconds from its start until it has handled the
    first `target` events, and the households it then holds with their cards."""
    url, schema = await suite.migrate("benefits", name)
    nc = await nats.connect(suite.nats.url)
    js = nc.jetstream()
    started = suite.start("benefits", url, schema, registry_url=suite.url("registry"), **settings)
    deadline = started + suite.args.timeout
    try:
        while (done := await acked(js)) < target:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{name}: {done} of {target} handled after {suite.args.timeout} s"
                )
            await asyncio.sleep(0.05)
        seconds = time.monotonic() - started
    finally:
        suite.stop("benefits")
        await js.delete_consumer("REGISTRY", CONSUMER)
        await nc.close()
    return seconds, await cards(url, schema)


async def cards(url: str, schema: str | None) -> int:
    """Households with a card, counted once the service has stopped."""
    engine = create_engine(url)
    table = f'"{schema}".current_card' if schema else "current_card"
    try:
        async with engine.connect() as connection:
            return int(
                (await connection.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
            )
    finally:
        await engine.dispose()


async def bench(args: argparse.Namespace) -> None:
    database = "PostgreSQL" if args.database_url else "SQLite"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"catch-up bench: {os.cpu_count()} cores, load average {load}, {database}")
    with tempfile.TemporaryDirectory(prefix="bangfu-bench-catchup-") as tmp:
        suite = Suite(args, Path(tmp))
        async with suite.running():
            await wait_for_backlog(suite.nats.url, args.households)
            sample = min(args.baseline_households, args.households)
            base_s, base_held = await catch_up(
                suite, "baseline", sample, registry_batch_reads="false"
            )
            base_rate = sample / base_s
            print(
                f"baseline, each household read on its own: the first {sample:,} events "
                f"handled in {base_s:.1f} s ({base_held:,} households held), "
                f"{base_rate:.1f} households/s"
            )
            ours_s, ours_held = await catch_up(suite, "ours", args.households)
            rate = args.households / ours_s
            ratio = rate / base_rate
            goal = "n/a"
            if args.households >= 10_000:
                goal = "met" if ours_s <= 60 else "NOT met"
            print(
                f"ours, a fetched batch's households in one read: {args.households:,} events "
                f"handled in {ours_s:.1f} s ({ours_held:,} households held), "
                f"{rate:.1f} households/s; ratio {ratio:.2f}; goal 10,000 within 60 s: {goal}"
            )
            load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
            print(f"load average after: {load}")
            print(f"ratio {ratio:.2f} households/s {rate:.1f} seconds {ours_s:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--households", type=int, default=10_000, help="the backlog")
    parser.add_argument("--baseline-households", type=int, default=500, help="held by the baseline")
    parser.add_argument(
        "--database-url", help="PostgreSQL (postgresql+asyncpg://…): fresh schemas, dropped"
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds per catch-up")
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
