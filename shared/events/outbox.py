"""The transactional outbox: events written with the change, published by a relay.

A crash at any point loses nothing (the row is committed with the change) and a retried
publish is dropped by JetStream's duplicate window, since `Nats-Msg-Id` is the event id.

On PostgreSQL a unit of one write whose statement found no earlier event of an aggregate
unsent (`at_once`) hands its events to the relay to publish at its commit, without a pass: a
pass's claim was 1.1 of the 2.4 ms from a report's commit to its event at a subscriber, and
one household's POST to its completed event took 67.3-68.6 ms without it against 69.3-70.3
(bench/verification.py, PostgreSQL, HTTP, 4 pairs). The rows stay unsent until published,
so a crash meanwhile leaves them to a relay's pass, as any other.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import structlog
from nats.js.client import JetStreamContext
from opentelemetry.trace import Span, SpanKind, StatusCode
from sqlalchemy import (
    CTE,
    BigInteger,
    Column,
    ColumnElement,
    DateTime,
    Index,
    Integer,
    Label,
    Select,
    String,
    Table,
    Text,
    Update,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import (
    OUTBOX_AT_ONCE,
    Database,
    as_utc,
    common_metadata,
    recordset,
    rows_param,
    unreachable,
)
from shared.events.envelope import CONTENT_TYPE, CloudEvent
from shared.observability import span

log = structlog.get_logger(__name__)

outbox = Table(
    "outbox",
    common_metadata,
    # SQLite only auto-increments an INTEGER PRIMARY KEY.
    Column("position", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("aggregate", String(100), nullable=False),
    Column("nats_subject", String(255), nullable=False),
    Column("body", Text, nullable=False),
    Column("traceparent", String(55)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True)),
    Index(
        "ix_outbox_unsent",
        "position",
        postgresql_where=Column("sent_at").is_(None),
        sqlite_where=Column("sent_at").is_(None),
    ),
    Index("ix_outbox_aggregate_position", "aggregate", "position"),
)


def outbox_rows(events: Sequence[CloudEvent]) -> list[dict[str, Any]]:
    """The outbox's rows for these events, in their order."""
    now = datetime.now(UTC)
    return [
        {
            "event_id": event.id,
            "aggregate": event.subject,
            "nats_subject": event.nats_subject,
            "body": event.to_json().decode(),
            "traceparent": event.traceparent,
            "created_at": now,
        }
        for event in events
    ]


# The columns `outbox_cte` writes, from the rows `outbox_params` gives.
_WRITTEN = [c for c in outbox.c if c.name not in ("position", "sent_at")]


def outbox_cte(*, when: ColumnElement[bool] | None = None) -> CTE:
    """An INSERT of outbox rows (only `when` it holds, if given) for a PostgreSQL statement to
    carry as a CTE: the change's own statement then writes its events, one round trip less.
    Its rows are the parameter `outbox_params` gives (`shared.db.recordset`), so one statement
    serves any number of events, written in their order (the positions the relay follows)."""
    values = recordset("outbox", _WRITTEN)
    if when is not None:
        values = values.where(when)
    return (
        insert(outbox)
        .from_select([c.name for c in _WRITTEN], values)
        .returning(outbox.c.event_id, outbox.c.aggregate)
        .cte("outbox_written")
    )


def at_once(written: CTE) -> Label[Any]:
    """A column for the statement that carries `written` (an `outbox_cte`): the ids of the
    events it wrote whose aggregate had no event unsent, which may be published at once, in
    order, as no relay can hold an earlier one (`note_at_once`). The statement's snapshot
    predates its own rows, so an aggregate's events written together all count.

    Worth it where an aggregate's events are apart: the registry's filing and change used it,
    but a change right after its filing found the filing's event not yet marked sent, so a
    pass ran all the same and the publish at once was CPU on top (bench/registry.py on
    PostgreSQL: 0.58-0.64 of the baseline, against 0.62-0.65 without)."""
    unsent = outbox.alias("unsent")
    earlier_unsent = (
        select(unsent.c.position)
        .where(unsent.c.aggregate == written.c.aggregate, unsent.c.sent_at.is_(None))
        .exists()
    )
    return (
        select(func.array_agg(written.c.event_id))
        .where(~earlier_unsent)
        .scalar_subquery()
        .label(OUTBOX_AT_ONCE)
    )


def note_at_once(session: AsyncSession, event_ids: Sequence[str] | None) -> None:
    """Tell the session's unit of work the events its statement found free to publish at once
    (the `at_once` column); a unit of one write hands them to the relay at its commit."""
    session.info.setdefault(OUTBOX_AT_ONCE, []).extend(event_ids or ())


def outbox_params(events: Sequence[CloudEvent]) -> dict[str, Any]:
    """The parameters of `outbox_cte` for these events."""
    return {"outbox": rows_param(_WRITTEN, outbox_rows(events))}


@dataclass(frozen=True)
class Backlog:
    """Unsent events: how many, and how long the oldest has waited."""

    count: int
    oldest_age_seconds: float


async def backlog(session: AsyncSession, *, now: datetime | None = None) -> Backlog:
    """Measure the unsent part of the outbox."""
    count, oldest = (
        await session.execute(
            select(func.count(), func.min(outbox.c.created_at)).where(outbox.c.sent_at.is_(None))
        )
    ).one()
    if oldest is None:
        return Backlog(count=0, oldest_age_seconds=0.0)
    return Backlog(count, ((now or datetime.now(UTC)) - as_utc(oldest)).total_seconds())


class _Unsent(NamedTuple):
    """An event to publish at once, as a row the relay reads (its position unknown)."""

    position: int
    event_id: str
    aggregate: str
    nats_subject: str
    body: str
    traceparent: str | None


def _relayed_values(event: CloudEvent) -> dict[str, Any]:
    row = outbox_rows([event])[0]
    return {name: row[name] for name in _Unsent._fields if name != "position"}


# What the relay reads of a row to publish it.
_RELAYED = (
    outbox.c.position,
    outbox.c.event_id,
    outbox.c.aggregate,
    outbox.c.nats_subject,
    outbox.c.body,
    outbox.c.traceparent,
)


def pass_interval(dialect: str) -> float:
    """The least time between two relay passes, by database (bench/events.py, 1 event per
    commit, 500 events/s offered for the latency).

    SQLite, 20 ms: a pass per commit or two spent the producer's CPU on passes, each taking
    turns with the writers, and the consumer's on a transaction per event (0.39-0.60 of the
    dual write; 10 ms: 0.48-0.86; 20 ms: 0.82-1.08, p99 under 41 ms). PostgreSQL, 5 ms: a claim
    runs on a connection of its own, beside the writers, and 20 ms only added its wait to
    every event (p99 29-33 ms against 11-20 ms at 5 ms, ratio 1.33-1.61 against 1.21-1.41;
    unpaced, 1.16-1.76 and p99 9-17 ms).
    """
    return 0.02 if dialect == "sqlite" else 0.005


class OutboxRelay:
    """Publishes committed outbox rows to JetStream, in order per aggregate, and marks them sent.

    Several replicas may run a relay against one PostgreSQL: rows are claimed with
    `FOR UPDATE SKIP LOCKED`, and a row is held back while an earlier unsent row of the same
    aggregate is claimed by another relay, so an aggregate's events never overtake each other.

    Passes start at most every `pass_seconds` (`pass_interval` by default): under a steady
    load the events committed meanwhile then go in one pass, one read and one wait for their
    PubAcks, and reach the consumers in batches.

    Events a unit of one write found free (`at_once`) are published at its commit
    (`publish_at_once`) and marked sent later; a pass that claims one meanwhile awaits its
    PubAck rather than publish it again, and another replica's duplicate is dropped by
    JetStream's duplicate window.
    """

    def __init__(
        self,
        db: Database,
        js: JetStreamContext,
        *,
        batch_size: int = 200,
        poll_seconds: float = 0.5,
        pass_seconds: float | None = None,
        publish_timeout: float = 5.0,
        keep_sent: timedelta = timedelta(days=7),
        mark_seconds: float = 0.1,
        on_backlog: Callable[[Backlog], None] | None = None,
    ):
        self._db = db
        self._js = js
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._pass_seconds = pass_interval(db.dialect) if pass_seconds is None else pass_seconds
        self._publish_timeout = publish_timeout
        self._keep_sent = keep_sent
        self._mark_seconds = mark_seconds
        self._on_backlog = on_backlog
        # Built once: building the claim costs ~1 ms of CPU, SQLite's read ~0.2 ms of the
        # 0.6 from a pass's start to its rows (bench/verification.py, one household).
        self._claim = _claim_statement(batch_size)
        self._unsent = _unsent_statement(batch_size)
        # SQLite: the last position published (its writes take turns, so positions commit in
        # order). Both: the ids of what is published but not yet marked sent (`_mark_later`).
        self._published_through = 0
        self._to_mark: list[str] = []
        # The events being published at once, by id, until marked sent: None until sent, then
        # their PubAck's future (`_publish_together`).
        self._at_once: dict[str, asyncio.Future[Any] | None] = {}
        self._publishing: set[asyncio.Task[None]] = set()
        self._marker: asyncio.Task[None] | None = None
        self._mark_now = asyncio.Event()
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def wake(self, events: Sequence[CloudEvent] = ()) -> None:
        """Called after a commit that wrote events: publish now rather than at the next poll
        (no pass for events being published at once)."""
        if not events or any(event.id not in self._at_once for event in events):
            self._wake.set()

    def publish_at_once(self, events: Sequence[CloudEvent]) -> None:
        """Called at the commit of a unit of one write, before `wake`, with the events that
        `at_once` found free: publish them now, in order per aggregate, and mark them sent
        within `mark_seconds`. One that fails is left unsent, to a pass."""
        if not events:
            return
        rows = [_Unsent(position=0, **_relayed_values(event)) for event in events]
        for row in rows:
            self._at_once[row.event_id] = None
        task = asyncio.create_task(self._publish_now(rows), name="outbox-publish-at-once")
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def _publish_now(self, rows: list[_Unsent]) -> None:
        published: list[Any] = []
        try:
            published = await self._publish(rows, at_once=True)
        finally:
            sent = {row.event_id for row in published}
            failed = [row.event_id for row in rows if row.event_id not in sent]
            for event_id in failed:
                self._at_once.pop(event_id, None)
            if failed:
                self._wake.set()
            self._mark_later(sorted(sent))

    def start(self) -> None:
        """Start publishing (once: a second call, from a retried setup, changes nothing)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task:
            await self._task
        await asyncio.gather(*self._publishing)
        await self.marked()

    async def marked(self) -> None:
        """Wait until what was published and not claimed is marked sent (a mark that failed
        is tried again at the next pass)."""
        while self._marker is not None and not self._marker.done():
            self._mark_now.set()
            await asyncio.shield(self._marker)

    async def relay_once(self) -> int:
        """Publish one batch and mark it sent; returns how many events were published."""
        published = await self._pass()
        await self.marked()
        return published

    async def _pass(self) -> int:
        """Publish one batch; on SQLite its mark may still be under way (`marked`)."""
        if self._db.dialect == "sqlite":
            return await self._relay_once_single_writer()
        self._mark_later([])  # what a failed mark left of the events published at once
        async with self._db.claiming() as session:
            claimed = await self.claim(session)
            published = {row.position for row in await self._publish(claimed)}
            # Still in the claim's transaction, so no other relay has seen the mark.
            await _mark_unsent(session, sorted({r.position for r in claimed} - published))
            return len(published)

    async def claim(self, session: AsyncSession) -> list[Any]:
        """PostgreSQL: the next rows to publish, in order, claimed in the transaction of
        `Database.claiming` (on a table of 40,000 sent rows not yet vacuumed, other scans made
        a claim 15 ms and p99 74 ms; bench/events.py)."""
        # Claimed, checked for overtaking and marked sent in one statement: each round
        # trip of a pass delays every event committed meanwhile.
        return sorted(
            (await session.execute(self._claim, {"now": datetime.now(UTC)})).all(),
            key=lambda row: row.position,
        )

    async def _relay_once_single_writer(self) -> int:
        """SQLite: one relay per database, so no claim is held while publishing.

        The rows after the last one published are read on the loop's thread, on a connection
        of their own (`Database.read_in_loop`), and marked sent later, in a transaction of the
        writers' pool: waiting there behind every writer queued was most of an event's time
        from its commit to its PubAck (bench/events.py: p50 14 ms). A crash before the mark
        only republishes, which Nats-Msg-Id deduplicates.
        """
        self._mark_later([])  # what a failed mark left
        rows = self._db.read_in_loop(self._unsent, {"after": self._published_through})
        if not rows:
            return 0
        published = await self._publish(rows)
        failed = {row.position for row in rows} - {row.position for row in published}
        # After a failure the next pass starts again at it: what was published after it is
        # republished, and dropped as a duplicate by JetStream.
        self._published_through = min(failed) - 1 if failed else rows[-1].position
        self._mark_later([row.event_id for row in published])
        return len(published)

    def _mark_later(self, event_ids: list[str]) -> None:
        """Mark published rows sent within `mark_seconds`, in a task of its own: one
        transaction for what the passes meanwhile published. Under a steady load a pass
        publishes a few events: a mark each would add a transaction a pass for the writers to
        wait behind (bench/events.py, passes unpaced, 1 event per commit: 304-346 events/s
        with a mark a pass, 332-374 with the marks gathered)."""
        self._to_mark += event_ids
        if self._to_mark and (self._marker is None or self._marker.done()):
            self._marker = asyncio.create_task(self._mark_pending(), name="outbox-mark")

    async def _mark_pending(self) -> None:
        while self._to_mark:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._mark_now.wait(), self._mark_seconds)
            self._mark_now.clear()
            event_ids, self._to_mark = self._to_mark, []
            try:
                async with self._db.sessionmaker() as session, session.begin():
                    await _mark_sent(session, event_ids)
            except Exception as exc:  # noqa: BLE001 - kept for the next pass to mark
                self._to_mark = event_ids + self._to_mark
                if not unreachable(exc):  # an outage is the relay's to report, once
                    log.warning("outbox.mark_failed", error=repr(exc))
                return
            for event_id in event_ids:
                self._at_once.pop(event_id, None)

    async def _publish(self, rows: Sequence[Any], *, at_once: bool = False) -> list[Any]:
        """Publish aggregates concurrently, each one's events in order, stopping at a failure:
        the next event of every aggregate at once, an aggregate's following one after its ack.
        The rows published."""
        chains: dict[str, list[Any]] = {}
        for row in rows:
            chains.setdefault(row.aggregate, []).append(row)
        waiting = [list(reversed(chain)) for chain in chains.values()]
        published: list[Any] = []
        while waiting:
            heads = [chain.pop() for chain in waiting]
            acked = await self._publish_together(heads, at_once=at_once)
            published += [row for row, ok in zip(heads, acked, strict=True) if ok]
            waiting = [chain for chain, ok in zip(waiting, acked, strict=True) if ok and chain]
        return published

    async def _publish_together(self, rows: list[Any], *, at_once: bool = False) -> list[bool]:
        """Publish the rows at once and await their PubAcks together; whether each was acked.

        `publish_async` and one wait, not a `publish` each in a task: on a loop busy with
        writers, each task and timer costs turns of the loop, each as long as their work.
        A row being published at once (`publish_at_once`) is not published again by a pass:
        its PubAck is awaited.
        """
        with contextlib.ExitStack() as spans:
            sent: list[tuple[Any, Span | None, asyncio.Future[Any] | BaseException]] = []
            for row in rows:
                in_flight = None if at_once else self._at_once.get(row.event_id)
                if in_flight is not None:
                    sent.append((row, None, in_flight))
                    continue
                # The header carries this publish's span; the event body keeps its origin's.
                publish_span, traceparent = spans.enter_context(
                    span(
                        f"publish {row.nats_subject}",
                        kind=SpanKind.PRODUCER,
                        parent=row.traceparent,
                        attributes={
                            "messaging.system": "nats",
                            "messaging.destination.name": row.nats_subject,
                            "messaging.message.id": row.event_id,
                        },
                    )
                )
                headers = {
                    "Nats-Msg-Id": row.event_id,
                    "Content-Type": CONTENT_TYPE,
                    "traceparent": traceparent,
                }
                try:
                    ack: asyncio.Future[Any] | BaseException = await self._js.publish_async(
                        row.nats_subject, row.body.encode(), headers=headers
                    )
                except Exception as exc:  # noqa: BLE001 - any failure: retry next pass
                    ack = exc
                if at_once and isinstance(ack, asyncio.Future):
                    self._at_once[row.event_id] = ack
                sent.append((row, publish_span, ack))
            futures = [ack for _, _, ack in sent if isinstance(ack, asyncio.Future)]
            if futures:
                await asyncio.wait(futures, timeout=self._publish_timeout)
            acked: list[bool] = []
            for row, sent_span, ack in sent:
                error = ack if isinstance(ack, BaseException) else _failure(ack)
                if error is not None and sent_span is not None:  # else the publish at once's
                    sent_span.set_status(StatusCode.ERROR, repr(error))
                    log.warning("outbox.publish_failed", event_id=row.event_id, error=repr(error))
                acked.append(error is None)
            return acked

    async def _run(self) -> None:
        last_housekeeping = 0.0
        database_away = False
        loop = asyncio.get_running_loop()
        last_pass = -self._pass_seconds
        while not self._stopping:
            published = 0
            if (wait := last_pass + self._pass_seconds - loop.time()) > 0:
                await asyncio.sleep(wait)  # under load: the events committed meanwhile gather
            last_pass = loop.time()
            try:
                published = await self._pass()
                if loop.time() - last_housekeeping > 5:
                    last_housekeeping = loop.time()
                    await self._housekeeping()
            except Exception as exc:  # noqa: BLE001 - the relay must outlive any one failure
                if not unreachable(exc):
                    log.exception("outbox.relay_failed", error=repr(exc))
                elif not database_away:  # said once per outage, not at every poll
                    database_away = True
                    log.warning("outbox.database_away", error=repr(exc))
            else:
                if database_away:
                    database_away = False
                    log.info("outbox.database_back")
            if published < self._batch_size:
                # Woken during the pass (the usual case under load): go on at once, as
                # wait_for would only after three turns of a busy event loop.
                if not self._wake.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._poll_seconds)
                self._wake.clear()

    async def _housekeeping(self) -> None:
        async with self._db.sessionmaker() as session, session.begin():
            if self._on_backlog:
                self._on_backlog(await backlog(session))
            # The newest row is kept: SQLite numbers a row after the highest one left, and a
            # position again below the last one published would never be read.
            newest = select(func.max(outbox.c.position)).scalar_subquery()
            await session.execute(
                delete(outbox).where(
                    outbox.c.sent_at < datetime.now(UTC) - self._keep_sent,
                    outbox.c.position < newest,
                )
            )


def _unsent_statement(batch_size: int) -> Select[Any]:
    """SQLite: the first unsent rows after the parameter `after` (the last one published)."""
    return (
        select(*_RELAYED)
        .where(outbox.c.sent_at.is_(None), outbox.c.position > bindparam("after"))
        .order_by(outbox.c.position)
        .limit(batch_size)
    )


def _claim_statement(batch_size: int) -> Update:
    """Lock the first unsent rows no other relay holds, keep those that no unsent row of their
    aggregate held elsewhere precedes, mark them sent (at the parameter `now`), return them.

    The mark is undone for what fails to publish before the transaction commits, and undone by
    the rollback if the relay dies, so an event is never marked without its PubAck. A row held
    back stays locked (and unsent) until the commit.
    """
    claimed = (
        select(outbox.c.position, outbox.c.aggregate)
        .where(outbox.c.sent_at.is_(None))
        .order_by(outbox.c.position)
        .limit(batch_size)
        .with_for_update(skip_locked=True)
        .cte("claimed")
    )
    earlier = outbox.alias("earlier")
    held_elsewhere = (
        select(earlier.c.position)
        .where(
            earlier.c.aggregate == claimed.c.aggregate,
            earlier.c.sent_at.is_(None),
            earlier.c.position < claimed.c.position,
            earlier.c.position.not_in(select(claimed.c.position)),
        )
        .exists()
    )
    return (
        update(outbox)
        .where(outbox.c.position.in_(select(claimed.c.position).where(~held_elsewhere)))
        .values(sent_at=bindparam("now"))
        .returning(*_RELAYED)
    )


def _failure(ack: asyncio.Future[Any]) -> BaseException | None:
    """Why a publish has no PubAck (none in time: it is given up), or None."""
    if not ack.done():
        ack.cancel()
        return TimeoutError("no PubAck in time")
    if ack.cancelled():  # by the client, closing
        return asyncio.CancelledError()
    return ack.exception()


async def _mark_sent(session: AsyncSession, event_ids: list[str]) -> None:
    if event_ids:
        await session.execute(
            update(outbox).where(outbox.c.event_id.in_(event_ids)).values(sent_at=datetime.now(UTC))
        )


async def _mark_unsent(session: AsyncSession, positions: list[int]) -> None:
    """Undo the claim's mark of the events whose publish failed: the next pass retries them."""
    if positions:
        await session.execute(
            update(outbox).where(outbox.c.position.in_(positions)).values(sent_at=None)
        )
