"""Benchmark of the event backbone: outbox -> relay -> JetStream -> consumer with inbox.

Run: `.venv/bin/python bench/events.py [--events N] [--rate R] [--seconds S]
[--database-url postgresql+asyncpg://...]`. Not a test: it asserts nothing, it prints figures.

It runs on the embedded default's parts: a real nats-server (file store in a temporary
directory) started here, and SQLite (aiosqlite) files in that directory, or PostgreSQL schemas
created and dropped here when `--database-url` is given. As in the suite, the producing service
and the consuming service are two processes with a database each: this process commits and
runs the OutboxRelay, a child process runs the ConsumerRunner. The baseline has the same two
processes. Both use uvloop when installed, as uvicorn does. Times are `time.perf_counter()`,
which is CLOCK_MONOTONIC on Linux and so comparable between the two processes.

1. Raw JetStream, for context: no database at all, a limit no transactional system reaches.
   The same envelope bytes, subjects and `Nats-Msg-Id` headers are published with
   `publish_async` in windows, each ack awaited; a durable pull consumer fetches in batches and
   acks each message. events/s = N / (first publish -> last ack).
2. Dual write, the baseline (what a team would otherwise write): each writer commits its row
   and then publishes the event straight to JetStream (`js.publish`, ack awaited; no outbox, so
   a crash between the two loses the event); the consumer fetches in batches and, per message,
   inserts its effect row in a transaction of its own and acks (no inbox, so a redelivery
   applies it twice). events/s = N / (first commit -> last ack).
3. Ours: the same number of events, each committed with the same row through the unit of work
   (1 per commit from several writers: the headline, since a request or message yields one
   transaction and usually one event; 10 per commit is printed too), published by the
   OutboxRelay, handled by a ConsumerRunner whose handler inserts the same effect row; both
   with their default settings. events/s = N / (first commit -> last ack).
4. Latency at a fixed offered load (ours, then the dual write for comparison): writers commit
   one event at a time on a schedule of `--rate` events/s for `--seconds`. Per event, from
   just after `uow.commit()` returns (the producer records it by event id) to just after the
   runner's `handle()` returns in the consumer process, i.e. after the handler's transaction
   committed and `message.ack()` was handed to the NATS client (a fire-and-forget publish, as
   in the baseline). The event data also carries the wall-clock time before the commit, for
   anyone reading the stream. The same interval is split at two more points: when the relay
   got the stream's PubAck (its `publish_async` future done, seen through a timing proxy) and
   when the runner's `handle()` was called. The consumer may receive a message before the busy
   producer loop has processed its PubAck, so the middle part can be slightly negative.

Each throughput line also gives the CPU time (user + system, all threads) per event of the
producer process, the consumer process and nats-server (PostgreSQL's own CPU is not counted).

The last line is `ratio <x> events/s <n> p50_ms <n> p99_ms <n> raw_ratio <y>`: x = ours / the
dual write, y = ours / raw JetStream, the latencies ours at `--rate` (500 by default). The goals
(issue 17): x at least 0.7 and p99 at most 50 ms at 500 events/s offered, on SQLite and
PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import nats
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError
from sqlalchemy import Column, Integer, String, Table, delete, func, insert, select, text

from shared.db import Database, UnitOfWork, common_metadata, create_engine, new_metadata
from shared.events.consumer import ConsumerRunner, Subscription, inbox
from shared.events.envelope import CONTENT_TYPE, CloudEvent, new_event
from shared.events.outbox import OutboxRelay, outbox
from shared.events.streams import ensure_dead_letter_stream, ensure_stream, service_stream
from shared.natsserver import NatsServer, free_port
from shared.observability import configure_logging
from shared.serve import settle_heap

STREAM, SUBJECTS = service_stream("registry")
REGIONS = ("411302", "411303", "411321", "410102", "410105", "440305")
HOUSEHOLDS = 1_000
PUBLISH_WINDOW = 1_000
FETCH_BATCH = 100
THROUGHPUT_TIMEOUT = 30.0  # per run; a slower run is cut short and marked INCOMPLETE
DRAIN_TIMEOUT = 15.0  # after the latency schedule ends

bench_metadata = new_metadata()
# The consumer's effect of an event, and the producer's own row written with each event.
bench_effect = Table(
    "bench_effect",
    bench_metadata,
    Column("event_id", String(36), primary_key=True),
    Column("n", Integer, nullable=False),
)
bench_record = Table(
    "bench_record",
    bench_metadata,
    Column("event_id", String(36), primary_key=True),
    Column("n", Integer, nullable=False),
)


@dataclass(frozen=True)
class Setup:
    """Where the consumer process finds NATS and its own database."""

    nats_url: str
    database_url: str
    schema: str | None


@dataclass(frozen=True)
class Command:
    """One run for the consumer process: raw JetStream or our runner, and how many to await."""

    kind: str  # "raw", "dual" or "ours"
    expected: int
    timeout: float


@dataclass
class Consumed:
    """What the consumer process saw: when each event's ack went out, and rows handled."""

    acked_at: dict[str, float] = field(default_factory=dict)
    handling_at: dict[str, float] = field(default_factory=dict)  # handle() called
    last_ack: float = 0.0
    handled_rows: int = 0
    cpu_seconds: float = 0.0


@dataclass
class Throughput:
    """N events from the first publish (or commit) to the last ack."""

    events: int
    seconds: float
    complete: bool = True
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds used, per process

    @property
    def per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Latency:
    """Commit -> ack times at a fixed offered load, and whether the load was sustained."""

    offered: int
    committed: int
    commit_seconds: float
    rate: float
    millis: list[float]
    stages: dict[str, list[float]] = field(default_factory=dict)  # the same, split in three

    @property
    def achieved_rate(self) -> float:
        return self.committed / self.commit_seconds if self.commit_seconds > 0 else 0.0

    @property
    def sustained(self) -> bool:
        """Every event committed, at 95 % of the offered rate or better, and every one acked."""
        return (
            self.committed == self.offered
            and self.achieved_rate >= 0.95 * self.rate
            and len(self.millis) == self.offered
        )

    def percentile(self, p: float) -> float:
        return percentile(self.millis, p)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile; inf when there is nothing to rank."""
    if not values:
        return float("inf")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def sample_event(n: int, *, extra: dict[str, Any] | None = None) -> CloudEvent:
    """A realistic household event: 1,000 households over six counties."""
    household = f"household-{n % HOUSEHOLDS:05d}"
    return new_event(
        service="registry",
        aggregate="household",
        name="changed",
        subject=household,
        region=REGIONS[n % len(REGIONS)],
        sequence=n // HOUSEHOLDS + 1,
        data={
            "n": n,
            "household_id": household,
            "status": "enrolled",
            "members": 3,
            "monthly_income_fen": 123_400,
            "id_number_masked": "4113**********1234",
            **(extra or {}),
        },
    )


def headers_of(event: CloudEvent) -> dict[str, str]:
    """The headers the relay sends."""
    headers = {"Nats-Msg-Id": event.id, "Content-Type": CONTENT_TYPE}
    if event.traceparent:
        headers["traceparent"] = event.traceparent
    return headers


# --- the consumer process ----------------------------------------------------------------


def msg_id(message: Msg) -> str:
    """The event id the relay (and the baseline) put in `Nats-Msg-Id`."""
    return (message.headers or {}).get("Nats-Msg-Id", "")


class AckTracker:
    """When each event's ack was handed to the client; `done` once `expected` are in."""

    def __init__(self, expected: int):
        self.expected = expected
        self.consumed = Consumed()
        self.done = asyncio.Event()

    def record(self, event_id: str) -> None:
        now = time.perf_counter()
        acked_at = self.consumed.acked_at
        if event_id not in acked_at:
            acked_at[event_id] = self.consumed.last_ack = now
        if len(acked_at) >= self.expected:
            self.done.set()


class TimedRunner(ConsumerRunner):
    """The shipped runner, timed after `handle_batch()` returns: committed, acks sent."""

    def __init__(self, *args: Any, tracker: AckTracker, **options: Any):
        super().__init__(*args, **options)
        self.tracker = tracker

    async def handle_batch(self, messages: list[Msg], *, ahead: object = None) -> None:
        started = time.perf_counter()
        for message in messages:
            self.tracker.consumed.handling_at.setdefault(msg_id(message), started)
        await super().handle_batch(messages, ahead=ahead)
        for message in messages:
            self.tracker.record(msg_id(message))


async def record_effect(event: CloudEvent, uow: UnitOfWork) -> None:
    """The trivial handler: one row in a small table, in the runner's transaction."""
    await uow.session.execute(insert(bench_effect).values(event_id=event.id, n=event.data["n"]))


async def consume_ours(db: Database, js: JetStreamContext, command: Command) -> Consumed:
    """Our ConsumerRunner with its default settings, until `expected` events are acked."""
    tracker = AckTracker(command.expected)
    subscription = Subscription("bench-ours", STREAM, SUBJECTS, record_effect)
    runner = TimedRunner(db, js, subscription, tracker=tracker)
    await runner.start()
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tracker.done.wait(), command.timeout)
    finally:
        await runner.stop()
    return tracker.consumed


async def fetched(
    js: JetStreamContext, durable: str, tracker: AckTracker, timeout: float
) -> AsyncIterator[list[Msg]]:
    """Batches from a new durable pull consumer on the stream, until `tracker` has every
    event or `timeout` passes."""
    config = ConsumerConfig(
        durable_name=durable,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        filter_subjects=SUBJECTS,
    )
    await js.add_consumer(STREAM, config)
    pull = await js.pull_subscribe_bind(durable=durable, stream=STREAM)
    deadline = time.perf_counter() + timeout
    try:
        while not tracker.done.is_set() and time.perf_counter() < deadline:
            try:
                yield await pull.fetch(FETCH_BATCH, timeout=1)
            except (NatsTimeoutError, TimeoutError):
                continue
    finally:
        await pull.unsubscribe()


async def consume_baseline(js: JetStreamContext, command: Command) -> Consumed:
    """A durable pull consumer that fetches in batches and acks each message."""
    tracker = AckTracker(command.expected)
    async for messages in fetched(js, "bench-baseline", tracker, command.timeout):
        for message in messages:
            await message.ack()
            tracker.record(msg_id(message))
    return tracker.consumed


async def consume_dual_write(db: Database, js: JetStreamContext, command: Command) -> Consumed:
    """The dual write's consumer: per message, its effect row in a transaction, then the ack
    (no inbox: a redelivered message would insert again, here a key violation)."""
    tracker = AckTracker(command.expected)
    async for messages in fetched(js, "bench-dual", tracker, command.timeout):
        for message in messages:
            tracker.consumed.handling_at.setdefault(msg_id(message), time.perf_counter())
            event = json.loads(message.data)
            async with db.sessionmaker() as session, session.begin():
                row = {"event_id": event["id"], "n": event["data"]["n"]}
                await session.execute(insert(bench_effect).values(row))
            await message.ack()
            tracker.record(msg_id(message))
    return tracker.consumed


async def serve_consumer(setup: Setup, connection: Connection) -> None:
    """Run each command the producer sends, answering "ready" and then what was consumed."""
    nc = await nats.connect(setup.nats_url, name="bench-consumer")
    db = Database(setup.database_url, schema=setup.schema)
    loop = asyncio.get_running_loop()
    try:
        while (command := await loop.run_in_executor(None, connection.recv)) is not None:
            await clear(db, bench_effect, inbox)
            settle_heap()  # as a service's process does once started (shared.serve)
            connection.send("ready")
            cpu = time.process_time()
            if command.kind == "raw":
                consumed = await consume_baseline(nc.jetstream(), command)
            elif command.kind == "dual":
                consumed = await consume_dual_write(db, nc.jetstream(), command)
            else:
                consumed = await consume_ours(db, nc.jetstream(), command)
            consumed.cpu_seconds = time.process_time() - cpu
            consumed.handled_rows = await count_rows(db, bench_effect)
            # A plain dict: this module is `__mp_main__` here, so its classes would not unpickle.
            connection.send(vars(consumed))
    finally:
        await db.dispose()
        await nc.close()


def consumer_main(setup: Setup, connection: Connection) -> None:
    """Entry point of the consumer process."""
    configure_logging(level="WARNING", json=False)
    run_loop(lambda: serve_consumer(setup, connection))


class ConsumerProcess:
    """The child process that plays the consuming service."""

    def __init__(self, setup: Setup):
        self._connection, child_end = multiprocessing.get_context("spawn").Pipe()
        self._process = multiprocessing.get_context("spawn").Process(
            target=consumer_main, args=(setup, child_end), name="bench-consumer", daemon=True
        )
        self._process.start()

    async def start(self, command: Command) -> None:
        """Send a command and wait until its consumer is about to start."""
        self._connection.send(command)
        if await self._receive(60) != "ready":
            raise RuntimeError("the consumer process did not get ready")

    async def result(self, timeout: float) -> Consumed:
        answer = await self._receive(timeout)
        if not isinstance(answer, dict):
            raise RuntimeError(f"unexpected answer from the consumer process: {answer!r}")
        return Consumed(**answer)

    async def _receive(self, timeout: float) -> Any:
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, self._connection.poll, timeout):
            raise TimeoutError("the consumer process did not answer")
        return self._connection.recv()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._connection.send(None)
        self._process.join(30)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)


# --- resources -----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def nats_server(tmp: Path) -> AsyncIterator[NatsServer]:
    """A real nats-server with a file store under `tmp`."""
    server = NatsServer(port=free_port(), store_dir=tmp / "jetstream", log_file=tmp / "nats.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def database_pair(url: str | None, tmp: Path) -> AsyncIterator[tuple[Setup, Setup]]:
    """The producer's and the consumer's databases: SQLite files, or fresh PostgreSQL schemas."""
    if url is None:
        pair = (
            Setup("", f"sqlite+aiosqlite:///{tmp / name}.db", None)
            for name in ("producer", "consumer")
        )
        producer, consumer = pair
        await create_tables(producer, consumer)
        yield producer, consumer
        return
    prefix = f"bench_events_{uuid.uuid4().hex[:8]}"
    producer, consumer = (Setup("", url, f"{prefix}_{name}") for name in ("producer", "consumer"))
    admin = create_engine(url)
    try:
        async with admin.begin() as connection:
            for setup in (producer, consumer):
                await connection.execute(text(f'CREATE SCHEMA "{setup.schema}"'))
        await create_tables(producer, consumer)
        yield producer, consumer
    finally:
        async with admin.begin() as connection:
            for setup in (producer, consumer):
                await connection.execute(text(f'DROP SCHEMA IF EXISTS "{setup.schema}" CASCADE'))
        await admin.dispose()


async def create_tables(*setups: Setup) -> None:
    for setup in setups:
        db = Database(setup.database_url, schema=setup.schema)
        async with db.engine.begin() as connection:
            await connection.run_sync(common_metadata.create_all)
            await connection.run_sync(bench_metadata.create_all)
        await db.dispose()


async def clear(db: Database, *tables: Table) -> None:
    async with db.sessionmaker() as session, session.begin():
        for table in tables:
            await session.execute(delete(table))


async def count_rows(db: Database, table: Table) -> int:
    async with db.sessionmaker() as session:
        query = select(func.count()).select_from(table)
        return int((await session.execute(query)).scalar_one())


async def fresh_stream(js: JetStreamContext) -> None:
    """An empty stream (and so no consumers), so that each run starts from the same state."""
    with contextlib.suppress(NotFoundError):
        await js.delete_stream(STREAM)
    await ensure_stream(js, name=STREAM, subjects=SUBJECTS)


# --- the producer (this process) ---------------------------------------------------------


@dataclass
class Producer:
    """This process: NATS, the producer's database, and the consumer process to drive."""

    js: JetStreamContext
    db: Database
    consumer: ConsumerProcess
    nats_pid: int | None

    async def run(
        self, kind: str, expected: int, timeout: float, produce: Callable[[], Awaitable[None]]
    ) -> Run:
        """Reset, start the consumer, produce; returns when production began and what was seen."""
        await fresh_stream(self.js)
        await clear(self.db, outbox, bench_record)
        # As a service's process does once started (shared.serve); the records of the runs
        # before are this bench's, not the service's heap.
        settle_heap()
        await self.consumer.start(Command(kind, expected, timeout))
        cpu, nats_cpu = time.process_time(), process_cpu_seconds(self.nats_pid)
        started = time.perf_counter()
        await produce()
        consumed = await self.consumer.result(timeout + 30)
        used = {"producer": time.process_time() - cpu, "consumer": consumed.cpu_seconds}
        if nats_cpu is not None and (nats_now := process_cpu_seconds(self.nats_pid)) is not None:
            used["nats-server"] = nats_now - nats_cpu
        return Run(started, consumed, used)

    @contextlib.asynccontextmanager
    async def relay(self) -> AsyncIterator[TimedJetStream]:
        """The shipped relay with its default settings, woken after each commit."""
        timed = TimedJetStream(self.js)
        relay = OutboxRelay(self.db, timed)  # type: ignore[arg-type]  # a proxy, see above
        self.db.after_commit = relay.wake
        relay.start()
        try:
            yield timed
        finally:
            await relay.stop()
            self.db.after_commit = None


class TimedJetStream:
    """The producer's JetStream context, noting when each publish was acknowledged by the stream.

    Only the relay's publishes go through it; it changes nothing else.
    """

    def __init__(self, js: JetStreamContext):
        self._js = js
        self.published_at: dict[str, float] = {}

    async def publish_async(self, subject: str, payload: bytes, **options: Any) -> Any:
        ack = await self._js.publish_async(subject, payload, **options)
        event_id = options["headers"]["Nats-Msg-Id"]

        def acknowledged(_: Any) -> None:
            self.published_at[event_id] = time.perf_counter()

        ack.add_done_callback(acknowledged)
        return ack

    def __getattr__(self, name: str) -> Any:
        return getattr(self._js, name)


@dataclass
class Run:
    """One run as the producer saw it: its start, what the consumer saw, CPU seconds used."""

    started: float
    consumed: Consumed
    cpu: dict[str, float]


def process_cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU of another process, from /proc (Linux); None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(expected: int, run: Run) -> Throughput:
    acked = len(run.consumed.acked_at)
    seconds = run.consumed.last_ack - run.started
    return Throughput(acked, seconds, complete=acked >= expected, cpu=run.cpu)


async def run_baseline(producer: Producer, events: Sequence[CloudEvent]) -> Throughput:
    """Raw JetStream: publish_async in windows, every publish ack awaited."""
    messages = [(e.nats_subject, e.to_json(), headers_of(e)) for e in events]
    js = producer.js

    async def publish() -> None:
        for start in range(0, len(messages), PUBLISH_WINDOW):
            window = messages[start : start + PUBLISH_WINDOW]
            futures = [
                await js.publish_async(subject, body, headers=headers)
                for subject, body, headers in window
            ]
            await asyncio.gather(*futures)

    run = await producer.run("raw", len(events), THROUGHPUT_TIMEOUT, publish)
    return throughput(len(events), run)


def records(events: Sequence[CloudEvent]) -> list[dict[str, Any]]:
    """The producer's own row for each event (the write the event announces)."""
    return [{"event_id": event.id, "n": event.data["n"]} for event in events]


async def commit_events(db: Database, events: Sequence[CloudEvent]) -> None:
    """Ours: the rows and their events in one transaction; the relay publishes after."""
    async with db.unit_of_work() as uow:
        await uow.session.execute(insert(bench_record), records(events))
        uow.publish(*events)
        await uow.commit()


async def commit_then_publish(db: Database, js: JetStreamContext, event: CloudEvent) -> None:
    """The dual write: the row committed, then the event published straight to JetStream."""
    async with db.sessionmaker() as session, session.begin():
        await session.execute(insert(bench_record), records([event]))
    await js.publish(event.nats_subject, event.to_json(), headers=headers_of(event))


async def run_dual_write(
    producer: Producer, events: Sequence[CloudEvent], *, writers: int
) -> Throughput:
    """Writers commit one row and publish its event, one event at a time."""
    queue = iter(events)

    async def writer() -> None:
        deadline = time.perf_counter() + THROUGHPUT_TIMEOUT
        for event in queue:  # one shared iterator: each event goes to one writer
            if time.perf_counter() > deadline:
                return
            await commit_then_publish(producer.db, producer.js, event)

    async def produce() -> None:
        await asyncio.gather(*(writer() for _ in range(writers)))

    run = await producer.run("dual", len(events), THROUGHPUT_TIMEOUT, produce)
    return throughput(len(events), run)


async def run_ours(
    producer: Producer, events: Sequence[CloudEvent], *, per_commit: int, writers: int
) -> tuple[Throughput, float, int]:
    """Writers commit `per_commit` events at a time; also returns the commit time and rows."""
    batches: Iterator[Sequence[CloudEvent]] = iter(
        [events[i : i + per_commit] for i in range(0, len(events), per_commit)]
    )
    committed_at = 0.0

    async def writer() -> None:
        deadline = time.perf_counter() + THROUGHPUT_TIMEOUT
        for batch in batches:  # one shared iterator: each batch goes to one writer
            if time.perf_counter() > deadline:
                return  # the consumer gives up then too
            await commit_events(producer.db, batch)

    async def produce() -> None:
        nonlocal committed_at
        await asyncio.gather(*(writer() for _ in range(writers)))
        committed_at = time.perf_counter()

    async with producer.relay():
        run = await producer.run("ours", len(events), THROUGHPUT_TIMEOUT, produce)
    return throughput(len(events), run), committed_at - run.started, run.consumed.handled_rows


async def run_latency(
    producer: Producer, *, rate: float, seconds: float, writers: int, kind: str = "ours"
) -> Latency:
    """Commit one event at a time on a fixed schedule; time each from commit to ack. `kind`
    "dual": the row is committed and the event then published straight to JetStream."""
    total = int(rate * seconds)
    committed: dict[str, float] = {}
    begin = last_commit = 0.0

    async def writer(first: int) -> None:
        nonlocal last_commit
        for n in range(first, total, writers):
            if time.perf_counter() > begin + seconds * 2:
                return  # far behind the schedule: not sustained, no point going on
            delay = begin + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            event = sample_event(n, extra={"committing_at": time.time()})
            if kind == "dual":
                async with producer.db.sessionmaker() as session, session.begin():
                    await session.execute(insert(bench_record), records([event]))
                committed[event.id] = last_commit = time.perf_counter()
                await producer.js.publish(
                    event.nats_subject, event.to_json(), headers=headers_of(event)
                )
                timed.published_at[event.id] = time.perf_counter()
                continue
            async with producer.db.unit_of_work() as uow:
                await uow.session.execute(insert(bench_record), records([event]))
                uow.publish(event)
                await uow.commit()
                committed[event.id] = last_commit = time.perf_counter()

    async def produce() -> None:
        nonlocal begin
        begin = time.perf_counter()
        await asyncio.gather(*(writer(k) for k in range(writers)))

    timeout = seconds * 2 + DRAIN_TIMEOUT  # stop waiting for the consumer at the latest then
    if kind == "dual":
        timed = TimedJetStream(producer.js)  # only its record of publish times is used
        consumed = (await producer.run("dual", total, timeout, produce)).consumed
    else:
        async with producer.relay() as timed:
            consumed = (await producer.run("ours", total, timeout, produce)).consumed
    acked = [event_id for event_id in committed if event_id in consumed.acked_at]
    millis = [(consumed.acked_at[event_id] - committed[event_id]) * 1000 for event_id in acked]
    points = (committed, timed.published_at, consumed.handling_at, consumed.acked_at)
    stages = {
        name: [(later[event_id] - earlier[event_id]) * 1000 for event_id in acked]
        for name, earlier, later in zip(STAGES, points, points[1:], strict=False)
    }
    return Latency(total, len(committed), last_commit - begin, rate, millis, stages)


STAGES = (
    "commit -> the stream's PubAck (relay, or the writer)",
    "PubAck -> handle() called (delivery, fetch, queue)",
    "handle() called -> acked (handler transaction)",
)


# --- report --------------------------------------------------------------------------------


def describe(name: str, result: Throughput) -> str:
    status = "" if result.complete else "  INCOMPLETE (timed out)"
    cpu = ", ".join(
        f"{process} {seconds * 1000 / max(result.events, 1):.2f}"
        for process, seconds in result.cpu.items()
    )
    return (
        f"{name:<42}{result.events:>7} events in {result.seconds:6.2f} s"
        f" = {result.per_second:>8,.0f} events/s{status}\n"
        f"    CPU ms per event: {cpu}"
    )


def describe_latency(name: str, latency: Latency, rate: float, seconds: float) -> str:
    sustained = "sustained" if latency.sustained else "NOT sustained"
    return (
        f"{name} latency, {rate:,.0f} events/s offered for {seconds:g} s: committed "
        f"{latency.committed}/{latency.offered} in {latency.commit_seconds:.2f} s "
        f"({latency.achieved_rate:,.0f}/s), acked {len(latency.millis)}: {sustained}\n"
        f"  commit -> ack  p50 {latency.percentile(50):.1f} ms  p90 {latency.percentile(90):.1f}"
        f" ms  p99 {latency.percentile(99):.1f} ms  max {max(latency.millis, default=0):.1f} ms"
        f"   (goal p99 <= 50 ms)\n"
        + "\n".join(
            f"    {name:<54} p50 {percentile(ms, 50):7.1f} ms  p99 {percentile(ms, 99):7.1f} ms"
            for name, ms in latency.stages.items()
        )
    )


async def report(producer: Producer, args: argparse.Namespace) -> None:
    loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"database {producer.db.dialect} (one per process), nats-server with file store, "
        f"event loop {loop}, {os.cpu_count()} cores, load average {load}"
    )
    print(
        f"{args.events} events of {len(sample_event(0).to_json())} bytes over {HOUSEHOLDS} "
        f"households; {args.writers} writers"
    )

    raw = await run_baseline(producer, [sample_event(n) for n in range(args.events)])
    print(describe("raw JetStream publish/fetch/ack (no database)", raw))
    events = [sample_event(n) for n in range(args.events)]
    dual = await run_dual_write(producer, events, writers=args.writers)
    print(describe("baseline: dual write, 1 event per commit", dual))

    results: dict[int, Throughput] = {}
    for per_commit in (10, 1):
        events = [sample_event(n) for n in range(args.events)]
        result, commit_seconds, rows = await run_ours(
            producer, events, per_commit=per_commit, writers=args.writers
        )
        results[per_commit] = result
        print(
            describe(f"ours: {per_commit} event{'s' * (per_commit > 1)} per commit", result)
            + f"; commits ended at {commit_seconds:.2f} s, {rows} rows handled"
        )
    ours = results[1]

    def share(value: float, of: float) -> float:
        return value / of if of else 0.0

    ratio, raw_ratio = (
        share(ours.per_second, dual.per_second),
        share(ours.per_second, raw.per_second),
    )
    print(
        f"ratio to the dual write: {ratio:.2f} at 1 event per commit (headline, goal >= 0.7), "
        f"{share(results[10].per_second, dual.per_second):.2f} at 10 per commit; "
        f"to raw JetStream: {raw_ratio:.2f}"
    )

    latency = await run_latency(
        producer, rate=args.rate, seconds=args.seconds, writers=args.latency_writers
    )
    print(describe_latency("ours", latency, args.rate, args.seconds))
    dual_latency = await run_latency(
        producer, rate=args.rate, seconds=args.seconds, writers=args.latency_writers, kind="dual"
    )
    print(describe_latency("dual write", dual_latency, args.rate, args.seconds))
    print(
        f"ratio {ratio:.2f} events/s {ours.per_second:.0f} "
        f"p50_ms {latency.percentile(50):.1f} p99_ms {latency.percentile(99):.1f} "
        f"raw_ratio {raw_ratio:.2f}"
    )


async def bench(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bangfu-bench-") as tmpdir:
        tmp = Path(tmpdir)
        async with (
            nats_server(tmp) as server,
            database_pair(args.database_url, tmp) as (producer_db, consumer_db),
        ):
            nc = await nats.connect(server.url, name="bench-producer")
            db = Database(producer_db.database_url, schema=producer_db.schema)
            consumer_setup = Setup(server.url, consumer_db.database_url, consumer_db.schema)
            consumer = ConsumerProcess(consumer_setup)
            try:
                await ensure_dead_letter_stream(nc.jetstream())
                nats_pid = server.process.pid if server.process else None
                await report(Producer(nc.jetstream(), db, consumer, nats_pid), args)
            finally:
                consumer.stop()
                await db.dispose()
                await nc.close()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark of the event backbone.")
    parser.add_argument("--events", type=int, default=20_000, help="events per throughput run")
    parser.add_argument("--rate", type=float, default=500, help="offered events/s (latency)")
    parser.add_argument("--seconds", type=float, default=10, help="duration of the latency run")
    parser.add_argument("--writers", type=int, default=8, help="concurrent writers (throughput)")
    parser.add_argument(
        "--latency-writers", type=int, default=16, help="concurrent writers on the latency schedule"
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="postgresql+asyncpg://... (fresh schemas, dropped after); default SQLite in a tmp dir",
    )
    return parser.parse_args(argv)


def run_loop(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run on uvloop when installed: the services run under uvicorn, which picks it."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    configure_logging(level="WARNING", json=False)
    run_loop(lambda: bench(args))


if __name__ == "__main__":
    main()
