"""shared.db: the region confinement rule in SQL, on the test database (SQLite or PostgreSQL),
and SQLite's one writer surviving cancelled units of work."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    Column,
    Date,
    DateTime,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import (
    CHECKPOINT_EVERY,
    Database,
    NothingChanged,
    create_engine,
    region_condition,
    write_together,
)
from shared.events.envelope import new_event
from shared.events.outbox import outbox
from shared.regions import region_in
from tests.conftest import POSTGRES_URL
from tests.helpers import CountedQueue, counted_calls, eventually

CODES = ["411302", "411303", "411400", "420102", "110101"]
PREFIX_SETS = [[], ["41"], ["4113"], ["411302"], ["4113", "42"], ["11", "41", "42"], ["43"]]

metadata = MetaData()
place = Table("place", metadata, Column("region", String(6), primary_key=True))


@pytest.fixture
async def engine(tmp_path: object) -> AsyncIterator[AsyncEngine]:
    if POSTGRES_URL:
        schema = "test_db_region_condition"
        engine = create_engine(POSTGRES_URL, schema=schema)
        async with engine.begin() as connection:
            await connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
            await connection.execute(text(f"CREATE SCHEMA {schema}"))
    else:
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/regions.db")
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
        await connection.execute(insert(place), [{"region": code} for code in CODES])
    yield engine
    if POSTGRES_URL:
        async with engine.begin() as connection:
            await connection.execute(text("DROP SCHEMA IF EXISTS test_db_region_condition CASCADE"))
    await engine.dispose()


class TestRegionCondition:
    async def test_no_prefixes_select_nothing(self, engine: AsyncEngine) -> None:
        async with engine.connect() as connection:
            rows = (
                await connection.execute(select(place).where(region_condition(place.c.region, [])))
            ).all()
        assert rows == []

    @pytest.mark.parametrize("prefixes", PREFIX_SETS, ids=lambda p: ",".join(p) or "none")
    async def test_sql_selects_exactly_what_region_in_admits(
        self, engine: AsyncEngine, prefixes: list[str]
    ) -> None:
        async with engine.connect() as connection:
            query = select(place.c.region).where(region_condition(place.c.region, prefixes))
            selected = sorted((await connection.execute(query)).scalars())
        assert selected == sorted(code for code in CODES if region_in(code, prefixes))


async def _cancelled_in_rounds(
    writer: Callable[[], Awaitable[None]],
    after: Callable[[int], Awaitable[None]],
    *,
    first: float,
    step: float,
) -> None:
    """30 rounds: 8 writers started, cancelled at a later point each round, then `after(round)`
    given 10 s (a lock left behind would make it wait out SQLite's 30 s busy timeout)."""
    for round_ in range(30):
        writers = [asyncio.create_task(writer()) for _ in range(8)]
        await asyncio.sleep(first + step * round_)  # cancelled at varying points
        for task in writers:
            task.cancel()
        await asyncio.gather(*writers, return_exceptions=True)
        async with asyncio.timeout(10):
            await after(round_)


class TestCancelledWrites:
    async def test_a_write_after_cancelled_writers_does_not_wait_for_their_lock(
        self, tmp_path: Path
    ) -> None:
        # A writer cancelled inside a statement had its connection closed without a rollback;
        # sqlite3 kept that connection (its transaction, the write lock) until collected, and
        # the next write waited out the 30 s busy timeout (this test failed 3 runs of 3
        # without the fix).
        db = Database(f"sqlite+aiosqlite:///{tmp_path}/cancelled.db")
        async with db.engine.begin() as connection:
            await connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))

        async def writer() -> None:
            while True:
                async with db.unit_of_work() as uow:
                    await uow.session.execute(text("INSERT INTO t (v) VALUES ('w')"))
                    await uow.session.execute(text("SELECT count(*) FROM t"))
                    await uow.commit()

        async def after(_round: int) -> None:
            async with db.unit_of_work() as uow:
                await uow.session.execute(text("INSERT INTO t (v) VALUES ('after')"))
                await uow.commit()

        try:
            await _cancelled_in_rounds(writer, after, first=0.05, step=0.007)
            async with db.unit_of_work() as uow:
                after = (
                    await uow.session.execute(text("SELECT count(*) FROM t WHERE v = 'after'"))
                ).scalar_one()
            assert after == 30
        finally:
            await db.dispose()


class TestSQLiteStatementsInOneTrip:
    """Each statement is one call to aiosqlite's thread; what it returns is as sqlite3's."""

    @pytest.fixture
    async def sqlite_engine(self, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/trips.db")
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE)"))
        yield engine
        await engine.dispose()

    async def test_a_transaction_of_three_statements_is_four_calls(
        self, sqlite_engine: AsyncEngine
    ) -> None:
        async with sqlite_engine.connect() as connection:
            driver = (await connection.get_raw_connection()).driver_connection
            assert driver is not None
            counted = CountedQueue(driver._tx)
            driver._tx = counted
            async with connection.begin():  # BEGIN IMMEDIATE with the INSERT; COMMIT
                await connection.execute(text("INSERT INTO t (v) VALUES ('a')"))
                await connection.execute(text("UPDATE t SET v = 'b' WHERE v = 'a'"))
                rows = (await connection.execute(text("SELECT v FROM t"))).scalars().all()
            driver._tx = counted.queue
        assert rows == ["b"]
        # SQLAlchemy's own cursor made 3 or 4 calls a statement (open, execute, fetch, close):
        # 14 here; 5 with the BEGIN a call of its own.
        assert counted.calls == 4

    async def test_the_write_lock_is_taken_with_the_first_statement_and_not_before(
        self, tmp_path: Path, sqlite_engine: AsyncEngine
    ) -> None:
        db = Database(f"sqlite+aiosqlite:///{tmp_path}/trips.db")
        other = sqlite3.connect(tmp_path / "trips.db", isolation_level=None, timeout=0)

        def other_can_write() -> bool:
            try:
                other.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:  # database is locked
                return False
            other.execute("ROLLBACK")
            return True

        try:
            async with db.unit_of_work() as uow:
                await uow.session.connection()  # begun: its BEGIN waits for a statement
                assert other_can_write()
                await uow.session.execute(text("SELECT count(*) FROM t"))  # a read, first
                assert not other_can_write()  # IMMEDIATE: the write lock, for the writes after
                await uow.commit()
            assert other_can_write()
        finally:
            other.close()
            await db.dispose()

    async def test_a_unit_of_work_is_a_call_a_statement_and_its_commit(
        self, tmp_path: Path, sqlite_engine: AsyncEngine
    ) -> None:
        db = Database(f"sqlite+aiosqlite:///{tmp_path}/trips.db")
        async with db.sessionmaker() as session:
            driver = (await (await session.connection()).get_raw_connection()).driver_connection
            assert driver is not None
        counted = CountedQueue(driver._tx)
        driver._tx = counted
        async with db.unit_of_work() as uow:
            await uow.session.execute(text("INSERT INTO t (v) VALUES ('a')"))
            await uow.commit()
        async with db.sessionmaker() as session:
            assert (await session.execute(text("SELECT v FROM t"))).scalar_one() == "a"
        driver._tx = counted.queue
        await db.dispose()
        # BEGIN with the INSERT, COMMIT; BEGIN with the SELECT, ROLLBACK (the read's, on
        # closing). A BEGIN of its own was one more each, and so was the pool's rollback of each
        # connection given back with no transaction open.
        assert counted.calls == 4

    async def test_a_read_in_the_loop_calls_no_thread_and_does_not_wait_for_a_writer(
        self, tmp_path: Path, sqlite_engine: AsyncEngine
    ) -> None:
        db = Database(f"sqlite+aiosqlite:///{tmp_path}/trips.db")
        async with db.unit_of_work() as uow:
            await uow.session.execute(text("INSERT INTO t (v) VALUES ('a')"))
            await uow.commit()
        async with db.sessionmaker() as session:
            driver = (await (await session.connection()).get_raw_connection()).driver_connection
            assert driver is not None
        writer = sqlite3.connect(tmp_path / "trips.db", isolation_level=None)
        writer.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        writer.execute("INSERT INTO t (v) VALUES ('uncommitted')")
        counted = CountedQueue(driver._tx)
        driver._tx = counted
        try:
            started = time.perf_counter()
            rows = db.read_in_loop(text("SELECT v FROM t WHERE v > :after"), {"after": ""})
            took = time.perf_counter() - started
        finally:
            driver._tx = counted.queue
            writer.rollback()
            writer.close()
            await db.dispose()
        assert [row.v for row in rows] == ["a"]  # what is committed, not the writer's row
        assert took < 5  # a BEGIN IMMEDIATE would wait the 30 s busy timeout
        assert counted.calls == 0  # nothing through the pool's connection and its thread

    async def test_a_failed_unit_of_work_is_rolled_back(
        self, tmp_path: Path, sqlite_engine: AsyncEngine
    ) -> None:
        db = Database(f"sqlite+aiosqlite:///{tmp_path}/trips.db")
        with pytest.raises(RuntimeError):
            async with db.unit_of_work() as uow:
                await uow.session.execute(text("INSERT INTO t (v) VALUES ('a')"))
                raise RuntimeError("undone")
        async with db.sessionmaker() as session:
            assert (await session.execute(text("SELECT count(*) FROM t"))).scalar_one() == 0
        await db.dispose()

    async def test_results_row_counts_and_errors_are_sqlite3s(
        self, sqlite_engine: AsyncEngine
    ) -> None:
        async with sqlite_engine.begin() as connection:
            first = await connection.execute(text("INSERT INTO t (v) VALUES ('a')"))
            assert first.lastrowid == 1
            await connection.execute(
                text("INSERT INTO t (v) VALUES (:v)"), [{"v": "b"}, {"v": "c"}]
            )
            updated = await connection.execute(text("UPDATE t SET v = v || '!' WHERE id > 1"))
            assert updated.rowcount == 2
            result = await connection.execute(text("SELECT id, v FROM t ORDER BY id"))
            assert result.fetchone() == (1, "a")
            assert result.fetchmany(1) == [(2, "b!")]
            assert result.fetchall() == [(3, "c!")]
        with pytest.raises(IntegrityError):
            async with sqlite_engine.begin() as connection:
                await connection.execute(text("INSERT INTO t (v) VALUES ('a')"))
        async with sqlite_engine.connect() as connection:
            assert (await connection.execute(text("SELECT count(*) FROM t"))).scalar_one() == 3


typed_metadata = MetaData()
typed = Table(
    "typed",
    typed_metadata,
    Column("id", String(8), primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("day", Date),
    Column("doc", JSON),
    Column("note", Text),
)
other = Table("other", typed_metadata, Column("v", String(8), primary_key=True))
defaulted = Table(
    "defaulted",
    typed_metadata,
    Column("id", String(8), primary_key=True),
    Column("kind", String(8), default="plain"),
)


_NOTE_ONE = (
    update(typed)
    .where(typed.c.id == bindparam("_id"))
    .values(note=bindparam("note"))
    .returning(*typed.c)
)


def _typed_row(n: int, at: datetime) -> dict[str, Any]:
    # Keys in another order than the table's columns, a JSON null and a SQL NULL among them.
    return {
        "note": None if n % 2 else f"note {n}",
        "doc": None if n % 3 == 0 else {"n": n, "名": ["一", 2.5]},
        "day": date(2026, 12, n % 28 + 1),
        "at": at + timedelta(microseconds=n),
        "id": f"{n}",
    }


class TestReadCommitted:
    """`UnitOfWork.read_committed`: on a SQLite file, a read before the unit's first statement
    runs on the loop's thread and begins no transaction; after it, the session's."""

    @pytest.fixture
    async def db(self, tmp_path: Path) -> AsyncIterator[Database]:
        db = Database(f"sqlite+aiosqlite:///{tmp_path}/committed.db")
        async with db.engine.begin() as connection:
            await connection.run_sync(typed_metadata.create_all)
            await connection.execute(insert(other), [{"v": "a"}])
        yield db
        await db.dispose()

    async def test_first_on_the_loops_thread_then_in_the_session(self, db: Database) -> None:
        values = select(other.c.v).order_by(other.c.v)
        async with counted_calls(db) as (counted, _, _), db.unit_of_work() as uow:
            first = await uow.read_committed(values)
            assert (counted.calls, uow.session.in_transaction()) == (0, False)
            await uow.session.execute(insert(other), {"v": "b"})
            calls = counted.calls
            after = await uow.read_committed(values)  # its own write, not yet committed
            assert counted.calls == calls + 1
        assert [r["v"] for r in first] == ["a"]
        assert [r["v"] for r in after] == ["a", "b"]

    async def test_a_busy_file_is_read_in_the_session(self, db: Database, tmp_path: Path) -> None:
        # Another process holding the file (a WAL's recovery, say): the loop's read gives up
        # at once and the session's waits its turn.
        await db.engine.dispose()  # no connection of the pool's open: the file is the holder's
        holder = sqlite3.connect(tmp_path / "committed.db", isolation_level=None)
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")

        async def let_go() -> None:
            await asyncio.sleep(0.5)
            holder.execute("COMMIT")
            holder.close()

        letting_go = asyncio.create_task(let_go())
        async with db.unit_of_work() as uow:
            rows = await uow.read_committed(select(other.c.v))
            assert uow.session.in_transaction()  # read in the session, which began one
        await letting_go
        assert [r["v"] for r in rows] == ["a"]


class TestWriteTogether:
    """Several tables' rows and updates in one call to SQLite, on the loop's thread, stored as
    SQLAlchemy stores them, and the COMMIT with them when asked."""

    @pytest.fixture
    async def db(self, tmp_path: Path) -> AsyncIterator[Database]:
        db = Database(f"sqlite+aiosqlite:///{tmp_path}/together.db")
        async with db.engine.begin() as connection:
            await connection.run_sync(typed_metadata.create_all)
        yield db
        await db.dispose()

    async def test_the_stored_values_are_those_of_sqlalchemys_own_insert(
        self, db: Database
    ) -> None:
        # Times with and without microseconds, zones and years of fewer digits: the text
        # SQLite keeps of each (`_faster`) is SQLAlchemy's.
        ats = [
            datetime(2026, 12, 2, 1, 2, 3, tzinfo=UTC) - timedelta(microseconds=1),
            datetime(2026, 12, 2, 1, 2, 3, 456788, tzinfo=UTC),
            datetime(2026, 6, 1, 23, 59, 59, 999998, tzinfo=timezone(timedelta(hours=8))),
            datetime(999, 1, 2, 3, 4, 5),
            datetime(9999, 12, 31, 23, 59, 59, 999990),
            datetime(1, 1, 1, tzinfo=UTC),
        ]
        ours = [_typed_row(n, at) for n, at in enumerate(ats, 1)]
        theirs = [{**_typed_row(n, at), "id": f"s{n}"} for n, at in enumerate(ats, 1)]
        async with db.unit_of_work() as uow:
            await write_together(uow.session, [(typed, ours), (other, [])])
            await uow.session.execute(insert(typed), theirs)
            await uow.commit()
        async with db.sessionmaker() as session:
            stored = (
                await session.execute(text("SELECT id, at, day, doc, note FROM typed ORDER BY id"))
            ).all()
            read = {r.id: r for r in (await session.execute(select(typed))).all()}
        by_id = {row.id: tuple(row)[1:] for row in stored}
        assert len(by_id) == 12
        for n in range(1, 7):
            assert by_id[f"{n}"] == by_id[f"s{n}"]  # the same text, number and NULL stored
            assert read[f"{n}"].at.replace(tzinfo=None) == ours[n - 1]["at"].replace(tzinfo=None)
            assert read[f"{n}"].doc == ours[n - 1]["doc"]
            assert read[f"{n}"].day == ours[n - 1]["day"]
        assert by_id["3"][2] == "null"  # JSON's null, as SQLAlchemy writes a None to JSON
        assert by_id["1"][3] is None

    async def test_the_tables_rows_and_the_transactions_begin_run_on_the_loops_thread(
        self, db: Database
    ) -> None:
        async with counted_calls(db) as (counted, _, traced), db.unit_of_work() as uow:
            await write_together(
                uow.session,
                [(typed, [_typed_row(1, datetime.now(UTC))]), (other, [{"v": "a"}])],
            )
            await uow.commit()
        assert [(t.words, t.in_loop) for t in traced] == [
            ("BEGIN IMMEDIATE", True),
            ("INSERT INTO typed", True),
            ("INSERT INTO other", True),
            ("COMMIT", False),  # the session's, in the thread
        ]
        assert counted.calls == 1
        async with db.sessionmaker() as session:
            assert (await session.execute(select(other.c.v))).scalars().all() == ["a"]

    async def test_a_first_statement_changes_its_row_and_returns_it_as_sqlalchemy_reads_it(
        self, db: Database
    ) -> None:
        rows = [_typed_row(n, datetime(2026, 12, 5, 8, tzinfo=UTC)) for n in (1, 2)]
        async with db.unit_of_work() as uow:
            await uow.session.execute(insert(typed), rows)
            await uow.commit()
        async with counted_calls(db) as (counted, _, traced), db.unit_of_work() as uow:
            returned = await write_together(
                uow.session,
                [(other, [{"v": "after"}])],
                commit=True,
                first=(_NOTE_ONE, {"note": "changed", "_id": "2"}),
            )
            await uow.commit()
        assert [(t.words, t.in_loop) for t in traced] == [
            ("BEGIN IMMEDIATE", True),
            ("UPDATE typed SET", True),
            ("INSERT INTO other", True),
            ("COMMIT", True),
        ]
        assert counted.calls == 0
        async with db.sessionmaker() as session:
            read = (await session.execute(select(typed).where(typed.c.id == "2"))).mappings().one()
            assert (await session.execute(select(other.c.v))).scalars().all() == ["after"]
        assert returned == dict(read)
        assert returned["note"] == "changed"
        assert isinstance(returned["at"], datetime) and returned["doc"] == {
            "n": 2,
            "名": ["一", 2.5],
        }

    async def test_a_first_statement_that_changes_no_row_writes_nothing_and_the_unit_goes_on(
        self, db: Database
    ) -> None:
        async with db.unit_of_work() as uow:
            with pytest.raises(NothingChanged):
                await write_together(
                    uow.session,
                    [(other, [{"v": "never"}])],
                    commit=True,
                    first=(_NOTE_ONE, {"note": "changed", "_id": "absent"}),
                )
            await write_together(uow.session, [(other, [{"v": "next"}])], commit=True)
            await uow.commit()
        async with db.sessionmaker() as session:
            assert (await session.execute(select(other.c.v))).scalars().all() == ["next"]

    async def test_a_unit_of_works_events_go_with_its_commit(self, db: Database) -> None:
        async with db.engine.begin() as connection:
            await connection.run_sync(outbox.create)
        announced = new_event(
            service="registry",
            aggregate="household",
            name="filed",
            subject="h1",
            region="411302",
            sequence=1,
            data={"n": 1},
        )
        async with counted_calls(db) as (counted, _, traced), db.unit_of_work() as uow:
            await uow.session.execute(insert(other), {"v": "b"})
            uow.publish(announced)
            await uow.commit()
        assert [(t.words, t.in_loop) for t in traced] == [
            ("BEGIN IMMEDIATE", False),  # with the session's INSERT, in the thread
            ("INSERT INTO other", False),
            ("INSERT INTO outbox", True),  # the event's row and the COMMIT, on the loop's
            ("COMMIT", True),
        ]
        assert counted.calls == 1
        async with db.sessionmaker() as session:
            stored = (await session.execute(select(outbox.c.event_id, outbox.c.sent_at))).all()
            assert (await session.execute(select(other.c.v))).scalars().all() == ["b"]
        assert stored == [(announced.id, None)]

    async def test_an_update_stores_what_sqlalchemys_own_update_stores(self, db: Database) -> None:
        at = datetime(2026, 12, 2, 1, 2, 3, tzinfo=UTC)
        changed = update(typed).where(typed.c.id == bindparam("row_id"))
        changed = changed.values(at=bindparam("new_at"), doc=bindparam("new_doc"))
        async with db.unit_of_work() as uow:
            await write_together(uow.session, [(typed, [_typed_row(n, at) for n in (1, 2, 3, 4)])])
            await write_together(
                uow.session,
                [
                    (
                        changed,
                        [
                            {"new_doc": {"名": n}, "row_id": f"{n}", "new_at": at + timedelta(n)}
                            for n in (1, 3)
                        ],
                    )
                ],
            )
            await uow.session.execute(
                changed,
                [
                    {"row_id": f"{n}", "new_at": at + timedelta(n - 1), "new_doc": {"名": n - 1}}
                    for n in (2, 4)
                ],
            )
            await uow.commit()
        async with db.sessionmaker() as session:
            stored = dict(
                (await session.execute(text("SELECT id, at || ' ' || doc FROM typed"))).all()
            )
        assert stored["1"] == stored["2"]  # the same text written for the same values
        assert stored["3"] == stored["4"]
        assert stored["1"] != stored["3"]

    async def test_with_commit_the_rows_and_the_commit_are_one_call(self, db: Database) -> None:
        async with counted_calls(db) as (counted, driver, traced), db.unit_of_work() as uow:
            await write_together(uow.session, [(other, [{"v": "a"}])], commit=True)
            assert not driver.in_transaction  # committed in that call
            await uow.commit()
        assert [(t.words, t.in_loop) for t in traced] == [
            ("BEGIN IMMEDIATE", True),
            ("INSERT INTO other", True),
            ("COMMIT", True),
        ]
        assert counted.calls == 0  # nothing after, nothing in the thread
        async with db.unit_of_work() as uow:  # the next unit of work begins its own
            await write_together(uow.session, [(other, [{"v": "b"}])])
            await uow.rollback()
        async with db.sessionmaker() as session:
            assert (await session.execute(select(other.c.v))).scalars().all() == ["a"]

    async def test_an_error_is_sqlalchemys_and_undoes_the_unit_of_work(self, db: Database) -> None:
        with pytest.raises(IntegrityError):
            async with db.unit_of_work() as uow:
                await write_together(
                    uow.session,
                    [(other, [{"v": "a"}]), (typed, [_typed_row(1, datetime.now(UTC))] * 2)],
                )
                await uow.commit()
        async with db.sessionmaker() as session:
            assert (await session.execute(select(other.c.v))).scalars().all() == []

    async def test_a_write_after_cancelled_inserts_finds_no_transaction_left_open(
        self, db: Database
    ) -> None:
        # A unit of work cancelled while its call waited for the thread: the call still runs
        # there, its BEGIN included. Unless undone, the connection kept that transaction and
        # the write lock, and the next unit of work on it could not begin its own.
        serial = itertools.count()

        async def writer() -> None:
            while True:
                async with db.unit_of_work() as uow:
                    await write_together(uow.session, [(other, [{"v": f"w{next(serial)}"}])])
                    await uow.commit()

        async def after(round_: int) -> None:
            async with db.unit_of_work() as uow:
                await write_together(uow.session, [(other, [{"v": f"after{round_}"}])])
                await uow.commit()

        await _cancelled_in_rounds(writer, after, first=0.02, step=0.003)
        async with db.sessionmaker() as session:
            stored = (await session.execute(select(other.c.v))).scalars().all()
        assert sorted(v for v in stored if v.startswith("after")) == sorted(
            f"after{n}" for n in range(30)
        )

    async def test_a_write_lock_held_elsewhere_is_waited_for_in_the_thread_not_the_loop(
        self, db: Database, tmp_path: Path
    ) -> None:
        holder = sqlite3.connect(tmp_path / "together.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process, writing
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        async def write() -> None:
            async with db.unit_of_work() as uow:
                await write_together(uow.session, [(other, [{"v": "waited"}])], commit=True)
                await uow.commit()

        ticking = asyncio.create_task(tick())
        writing = asyncio.create_task(write())
        try:
            await asyncio.sleep(0.5)
            assert not writing.done()  # still waiting for the lock
            assert ticks >= 20  # the loop went on meanwhile (50 ticks of 10 ms at most)
            holder.rollback()
            await asyncio.wait_for(writing, 10)
        finally:
            ticking.cancel()
            holder.close()
        async with db.sessionmaker() as session:
            assert (await session.execute(select(other.c.v))).scalars().all() == ["waited"]

    async def test_the_wal_is_checkpointed_by_a_worker_every_so_many_commits(
        self, db: Database, tmp_path: Path
    ) -> None:
        def in_the_file_itself() -> int:
            # A copy of the database file without its WAL: only what was checkpointed.
            copy = tmp_path / "copy.db"
            copy.write_bytes((tmp_path / "together.db").read_bytes())
            with contextlib.closing(sqlite3.connect(copy)) as connection:
                try:
                    if not connection.execute("SELECT 1 FROM sqlite_master").fetchall():
                        return 0  # not even the tables yet
                    return int(connection.execute("SELECT count(*) FROM other").fetchone()[0])
                except sqlite3.DatabaseError:  # copied mid-checkpoint
                    return -1

        async with db.sessionmaker() as session:
            autocheckpoint = await session.execute(text("PRAGMA wal_autocheckpoint"))
            assert autocheckpoint.scalar_one() == 0  # not in a commit on the loop's thread

        async def commits(names: list[str]) -> None:
            for name in names:
                async with db.unit_of_work() as uow:
                    await write_together(uow.session, [(other, [{"v": name}])], commit=True)
                    await uow.commit()

        # The loop's default executor busy all the while with other blocking work (to_thread,
        # getaddrinfo): the checkpoint must not queue behind it. A CI run of the whole suite,
        # whose tests share one loop, once saw no checkpoint for 30 s, most likely so.
        release = threading.Event()
        loop = asyncio.get_running_loop()
        blocked = [loop.run_in_executor(None, release.wait) for _ in range(64)]
        try:
            first = CHECKPOINT_EVERY // 2  # with the table's creation, fewer than one's worth
            await commits([f"a{n}" for n in range(first)])
            await asyncio.sleep(0.2)
            assert in_the_file_itself() == 0  # all of it still in the WAL
            await commits([f"b{n}" for n in range(CHECKPOINT_EVERY)])  # far from 1,000 pages
            await eventually(
                lambda: asyncio.sleep(0, in_the_file_itself() >= first),
                "a checkpoint by the worker",
                timeout=10,
            )
        finally:
            release.set()
            await asyncio.gather(*blocked)

    async def test_a_column_with_a_python_default_must_be_given(self, db: Database) -> None:
        async with db.unit_of_work() as uow:
            with pytest.raises(ValueError, match="defaulted.kind"):
                await write_together(uow.session, [(defaulted, [{"id": "a"}])])
            await write_together(uow.session, [(defaulted, [{"id": "b", "kind": "given"}])])
            await uow.commit()


@pytest.mark.skipif(not POSTGRES_URL, reason="PostgreSQL's plan cache")
class TestPlansOnPostgresql:
    """Custom plans everywhere (a generic plan can misjudge a filter), but a unit of work that
    finds its rows by key lets PostgreSQL keep a cached statement's generic plan: on
    connections of its own, so that no unit pays a SET to switch a connection's mode."""

    LOOKUP = text("SELECT count(*) FROM pg_class WHERE relname = :name")

    @pytest.fixture
    async def database(self) -> AsyncIterator[Database]:
        assert POSTGRES_URL
        database = Database(POSTGRES_URL)
        yield database
        await database.dispose()

    async def plans(self, database: Database, *, by_key: bool) -> tuple[str, int, int, int]:
        """One unit of work: its plan cache mode, its backend, and how the lookup statement
        was planned so far on that connection (generic, custom)."""
        async with database.unit_of_work(by_key=by_key) as uow:
            await uow.session.execute(self.LOOKUP, {"name": "pg_class"})
            mode = (await uow.session.execute(text("SHOW plan_cache_mode"))).scalar_one()
            backend = (await uow.session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            generic, custom = (
                await uow.session.execute(
                    text(
                        "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
                        " WHERE statement LIKE 'SELECT count(*) FROM pg_class WHERE relname%'"
                    )
                )
            ).one()
            await uow.commit()
        return mode, backend, generic, custom

    async def test_units_by_key_keep_a_generic_plan_and_the_others_plan_each_execution(
        self, database: Database
    ) -> None:
        by_key, others = [], []
        for _ in range(8):  # alternating, as a service's units of work come
            by_key.append(await self.plans(database, by_key=True))
            others.append(await self.plans(database, by_key=False))
        assert {mode for mode, *_ in by_key} == {"auto"}
        assert {mode for mode, *_ in others} == {"force_custom_plan"}
        # PostgreSQL plans the first five executions with their values, then keeps the
        # generic plan, whose cost is no worse.
        assert [(generic, custom) for *_, generic, custom in by_key][-1] == (3, 5)
        assert [(generic, custom) for *_, generic, custom in others][-3:] == [
            (0, 6),
            (0, 7),
            (0, 8),
        ]
        # A connection each, and each kept its mode: no unit switched one.
        backends = {backend for _, backend, *_ in by_key}, {b for _, b, *_ in others}
        assert [len(b) for b in backends] == [1, 1]
        assert backends[0] != backends[1]

    async def test_large_values_are_compressed_with_lz4(self, database: Database) -> None:
        body = json.dumps([{"item": n, "findings": {"facts": "x" * 40}} for n in range(300)])
        async with database.unit_of_work() as uow:
            await uow.session.execute(text("CREATE TEMP TABLE report_like (body json)"))
            await uow.session.execute(text("INSERT INTO report_like VALUES (:b)"), {"b": body})
            method, size = (
                await uow.session.execute(
                    text(
                        "SELECT pg_column_compression(body), pg_column_size(body) FROM report_like"
                    )
                )
            ).one()
        assert method == "lz4"
        assert size < len(body) / 4


class TestUnitOfOneWrite:
    """A unit of work of one write: on PostgreSQL each statement commits on its own (no BEGIN
    and COMMIT round trips); on SQLite it is a transaction as any other."""

    @pytest.fixture
    async def database(self, tmp_path: Path) -> AsyncIterator[Database]:
        if POSTGRES_URL:
            schema = "test_db_one_write"
            database = Database(POSTGRES_URL, schema=schema)
            async with database.engine.begin() as connection:
                await connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
                await connection.execute(text(f"CREATE SCHEMA {schema}"))
        else:
            database = Database(f"sqlite+aiosqlite:///{tmp_path}/one_write.db")
        async with database.engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
        yield database
        if POSTGRES_URL:
            async with database.engine.begin() as connection:
                await connection.execute(text("DROP SCHEMA test_db_one_write CASCADE"))
        await database.dispose()

    async def regions(self, database: Database) -> list[str]:
        async with database.unit_of_work() as uow:
            return list((await uow.session.execute(select(place.c.region))).scalars())

    async def test_a_rollback_undoes_nothing_on_postgresql_and_everything_on_sqlite(
        self, database: Database
    ) -> None:
        seen_elsewhere = None
        async with database.unit_of_work(one_write=True) as uow:
            await uow.session.execute(insert(place), [{"region": "411302"}])
            if POSTGRES_URL:  # SQLite's one connection is this unit's until it ends
                seen_elsewhere = await self.regions(database)
            await uow.session.execute(insert(place), [{"region": "411303"}])
            await uow.rollback()
        kept = sorted(await self.regions(database))
        if POSTGRES_URL:
            assert (seen_elsewhere, kept) == (["411302"], ["411302", "411303"])
        else:
            assert kept == []

    @pytest.mark.skipif(not POSTGRES_URL, reason="PostgreSQL's transactions and plan cache")
    async def test_on_postgresql_no_transaction_is_opened_and_plans_are_kept(
        self, database: Database
    ) -> None:
        current = text("SELECT txid_current()")
        async with database.unit_of_work(one_write=True) as uow:
            apart = [(await uow.session.execute(current)).scalar_one() for _ in range(2)]
            mode = (await uow.session.execute(text("SHOW plan_cache_mode"))).scalar_one()
        async with database.unit_of_work(by_key=True) as uow:
            together = [(await uow.session.execute(current)).scalar_one() for _ in range(2)]
        assert (apart[0] != apart[1], together[0] == together[1]) == (True, True)
        assert mode == "auto"  # its statements find their rows by key, as `by_key`'s

    @pytest.mark.skipif(not POSTGRES_URL, reason="PostgreSQL's transactions")
    async def test_on_postgresql_a_first_read_by_key_begins_no_transaction(
        self, database: Database
    ) -> None:
        # `UnitOfWork.read_committed`: no BEGIN round trip before the unit's first statement.
        async with database.unit_of_work() as uow:
            await uow.session.execute(insert(place), [{"region": "411302"}])
            await uow.commit()
        by_region = select(place.c.region).where(place.c.region == "411302")
        async with database.unit_of_work() as uow:
            first = await uow.read_committed(by_region)
            began = uow.session.in_transaction()
            await uow.session.execute(insert(place), [{"region": "411303"}])
            # Once begun, in the unit's transaction: its own write, not yet committed.
            after = await uow.read_committed(select(place.c.region).order_by(place.c.region))
        assert ([r["region"] for r in first], began) == (["411302"], False)
        assert [r["region"] for r in after] == ["411302", "411303"]

    @pytest.mark.skipif(not POSTGRES_URL, reason="PostgreSQL's connections")
    async def test_on_postgresql_a_read_committed_is_the_units_own_connection(
        self, database: Database
    ) -> None:
        # With no transaction to stay out of, reading apart would be a checkout more.
        checkouts: list[object] = []

        def checked_out(dbapi_connection: object, *_: object) -> None:
            checkouts.append(dbapi_connection)

        pool = database.by_key_engine.sync_engine.pool
        event.listen(pool, "checkout", checked_out)
        try:
            async with database.unit_of_work(one_write=True) as uow:
                read = await uow.read_committed(select(place.c.region))
                await uow.session.execute(insert(place), [{"region": "411302"}])
                await uow.commit()
        finally:
            event.remove(pool, "checkout", checked_out)
        assert (read, len(checkouts)) == ([], 1)

    async def test_events_must_be_written_by_the_write_itself(self, database: Database) -> None:
        async with database.unit_of_work(one_write=True) as uow:
            uow.publish({"type": "queued but not taken"})
            with pytest.raises(RuntimeError, match="takes its events with the write"):
                await uow.commit()
            with pytest.raises(RuntimeError, match="no transaction"):
                async with uow.savepoint():
                    pass
