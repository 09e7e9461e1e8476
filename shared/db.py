"""Async SQLAlchemy engine, sessions and the unit of work, for SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import operator
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
import orjson
import sqlalchemy
import structlog
from asyncpg.exceptions import (  # type: ignore[import-untyped]
    CannotConnectNowError,
    TooManyConnectionsError,
)
from sqlalchemy import (
    Column,
    Executable,
    MetaData,
    RowMapping,
    Select,
    Table,
    Text,
    and_,
    bindparam,
    cast,
    column,
    event,
    false,
    func,
    or_,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.util import immutabledict
from sqlalchemy.util.concurrency import await_, in_greenlet

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


log = structlog.get_logger(__name__)

# How long a SQLite connection waits for another's write lock (in aiosqlite's thread).
BUSY_TIMEOUT_MS = 30_000

# PostgreSQL's plan cache modes: plan each execution with its values (every connection's
# default), or let a cached statement keep a generic plan after five executions.
CUSTOM_PLANS, GENERIC_PLANS = "force_custom_plan", "auto"

# Told the events a commit wrote (CloudEvents; the outbox imports this module), once committed.
AfterCommit = Callable[[Sequence[Any]], None]
# Where a statement that wrote outbox rows notes, in its session's `info`, the ids of the events
# it found free to be published at once (`shared.events.outbox.at_once`).
OUTBOX_AT_ONCE = "outbox_at_once"
# A read outside a unit's transaction (`Database.read_apart`).
ReadApart = Callable[[Executable, Mapping[str, Any]], Awaitable[list[RowMapping] | None]]


def json_text(value: Any) -> str:
    """A JSON column's text, as every engine here writes it.

    orjson rather than `json.dumps`: the JSON of a household's report (44 items and the body)
    took 1.2 ms of CPU with the standard library and 0.13 ms with orjson on the bench machine.
    Keys that are not strings are written as `json.dumps` writes them. Hashed JSON (an audit
    record's, a report's) keeps its own canonical form.
    """
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def json_value(text: str | bytes) -> Any:
    """A JSON column's value from its text, with orjson (`json_text`).

    SQLite hands a number in a JSON column over as a number; SQLAlchemy keeps it when the
    deserializer raises TypeError, as `json.loads` does and orjson does not.
    """
    if not isinstance(text, str | bytes):
        raise TypeError(f"JSON text expected, got {type(text).__name__}")
    return orjson.loads(text)


def rows_param(columns: Iterable[Column[Any]], rows: Iterable[Mapping[str, Any]]) -> str:
    """`recordset`'s parameter: these columns of the rows, as one JSON text."""
    names = [c.name for c in columns]
    return json_text([{name: row[name] for name in names} for row in rows])


def recordset(name: str, columns: Sequence[Column[Any]]) -> Select[Any]:
    """PostgreSQL: the rows given as the parameter `name` (`rows_param`), as these columns'
    values, in their order: one statement writes any number of rows.

    One JSON text rather than an array a column: asyncpg encodes an array element by element,
    each checked against the collection ABCs. With asyncpg alone on the bench machine, 40
    arrays of 44 texts (about a household's report) took 1.85 ms of CPU to send, the same
    values as one JSON text 0.36 ms. The rows come out in the order given.

    `json_to_recordset`, not `jsonb_`: the text is read as it goes rather than made into a
    JSONB value first, and a JSON column's value is stored as given (JSONB rewrote it, key
    order and numbers included, where a report's body is the text its hash was taken of). A
    household's report statement took 1.67-1.71 ms against 1.93-1.99 (PostgreSQL, replayed).
    """
    rows = (
        func.json_to_recordset(cast(bindparam(name, type_=Text), postgresql.JSON))
        .table_valued(*(column(c.name, c.type) for c in columns))
        .render_derived(name=f"{name}_rows", with_types=True)
    )
    return select(*(rows.c[c.name] for c in columns))


def new_metadata() -> MetaData:
    """A MetaData with the suite's constraint naming convention (stable migration diffs)."""
    return MetaData(naming_convention=NAMING_CONVENTION)


# Tables every service has in its own database: outbox, inbox, audit log, idempotency keys.
common_metadata = new_metadata()


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def insert_for(session: AsyncSession, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT of the session's dialect, for `on_conflict_do_nothing` / `_do_update`."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def region_condition(column: Any, prefixes: Sequence[str]) -> Any:
    """`column` (a GB/T 2260 code) starts with one of the prefixes, as index-friendly ranges.

    No prefixes means nowhere (`FALSE`), as `shared.regions.region_in` says in Python: an empty
    OR would render no condition at all, and an empty `regions` claim would read everything.
    """
    if not prefixes:
        return false()
    return or_(*(and_(column >= p, column < _next_prefix(p)) for p in prefixes))


def _next_prefix(prefix: str) -> str:
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def unreachable(exc: BaseException) -> bool:
    """The database is away (refused, starting up, full, a dropped connection), not a bad query.

    asyncpg raises a refusal bare but a "starting up" wrapped by SQLAlchemy: the cause chain
    is searched for either.
    """
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError | CannotConnectNowError | TooManyConnectionsError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def as_utc(moment: datetime) -> datetime:
    """A stored time as an aware UTC datetime: SQLite gives them back naive."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# The planner settings of `Database.claiming`.
INDEX_SCANS_ONLY = {"enable_bitmapscan": "off", "enable_seqscan": "off"}


def create_engine(
    url: str,
    *,
    schema: str | None = None,
    pool_size: int = 20,
    settings: Mapping[str, str] | None = None,
) -> AsyncEngine:
    """An engine for `sqlite+aiosqlite` or `postgresql+asyncpg`; `schema` sets the search path;
    at most `pool_size` connections on PostgreSQL, each opened when first needed, with the
    server `settings` given."""
    if is_sqlite(url):
        return _sqlite_engine(url)
    # Custom plans unless the engine is for units of work by key (`Database.by_key_engine`): a
    # generic plan for a cached statement ignores the values and can scan a whole index where
    # the values would use a selective one (seen in bench/registry).
    # lz4 rather than pglz for the values PostgreSQL compresses (over 2 KB: a report's body
    # and its audit record, 14-18 KB each): about the same size, and two such values cost an
    # insert 0.5 ms rather than 0.85 (bench/verification.py, stop 54). Every packaged
    # PostgreSQL from 14 on is built with it.
    server_settings = {
        "plan_cache_mode": CUSTOM_PLANS,
        "default_toast_compression": "lz4",
        **(settings or {}),
    }
    if schema:
        server_settings["search_path"] = schema
    connect_args: dict[str, Any] = {"server_settings": server_settings}
    return create_async_engine(
        url,
        connect_args=connect_args,
        json_serializer=json_text,
        json_deserializer=json_value,
        # Every connection opened is kept (no overflow): an overflow connection was closed when
        # given back, so each burst of requests opened new ones, each paying a TLS attempt, the
        # dialect's set-up queries and every statement prepared again (bench/registry: ~160
        # connections in one run; ~40 without the overflow).
        pool_size=pool_size,
        max_overflow=0,
        # Recycling rather than pre-ping: a ping costs a round trip per unit of work.
        pool_recycle=1800,
        # Which schema a connection works in, without asking the server (`shared.audit`).
        execution_options={"search_path": schema},
    )


def _sqlite_engine(url: str) -> AsyncEngine:
    path = url.split("///", 1)[1] if "///" in url else ""
    checkpoints = None
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        checkpoints = _Checkpoints(path)
    # One connection per process: sessions queue in the pool instead of sleeping in SQLite's
    # busy handler (which backs off up to 100 ms); SQLite has one writer at a time anyway.
    engine = create_async_engine(
        url,
        # The writes of `write_together` run on the loop's thread, the rest in aiosqlite's.
        connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        json_serializer=json_text,
        json_deserializer=json_value,
        pool_size=1,
        max_overflow=0,
        pool_timeout=60,
        module=_OneTripDBAPI(aiosqlite, sqlite3),
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, open transactions (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        if checkpoints is not None:
            # Its commits may run on the loop's thread (`write_together`): `_Checkpoints`.
            cursor.execute("PRAGMA wal_autocheckpoint=0")
            dbapi_connection.checkpoints = checkpoints
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        # IMMEDIATE takes the write lock up front: a read-then-write transaction can
        # then wait its turn instead of failing with "database is locked" on upgrade.
        # Sent with the transaction's first statement, in the same call to the driver.
        connection.connection.dbapi_connection.begin_immediate = True

    @event.listens_for(engine.sync_engine, "invalidate")
    def _on_invalidate(dbapi_connection: Any, _record: Any, _exception: Any) -> None:
        # A task cancelled inside a statement gets its connection invalidated and closed
        # without a rollback. sqlite3's close leaves a connection with statements not yet
        # finalized open until they are collected, with its transaction and the write lock:
        # every other connection then waited out the 30 s busy timeout. Roll back first.
        if in_greenlet():  # not when the garbage collector closes it
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await_(asyncio.shield(dbapi_connection.driver_connection.rollback()))

    return engine


def _query_only(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA query_only = ON")


def _run_statement(
    connection: aiosqlite.Connection, operation: str, parameters: Any, many: bool, begin: bool
) -> tuple[Any, list[Any], int, int | None]:
    """In aiosqlite's thread: the transaction begun if `begin`, then a statement's cursor
    opened, executed, read and closed."""
    cursor = connection._conn.cursor()  # sqlite3's own, in its thread
    try:
        if begin:
            cursor.execute("BEGIN IMMEDIATE")
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else []
        return description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


# A table's rows made by `write_together` in its call to the driver, from a cursor in its
# transaction, once the writes before them are done (`audit.chained_in_call`).
RowsMade = Callable[[sqlite3.Cursor], Sequence[Mapping[str, Any]]]
# A statement and its rows' values, or what makes them in the call.
_Step = tuple[str, list[Any]] | Callable[[sqlite3.Cursor], tuple[str, list[Any]]]


class _Busy(Exception):
    """Another process holds the SQLite file's write lock: wait for it off the loop."""


def _run_writes(
    connection: aiosqlite.Connection,
    statements: Sequence[_Step],
    begin: bool,
    commit: bool,
    in_loop: bool = False,
) -> None:
    """The transaction begun if `begin`, each statement executed with its rows, then committed
    if `commit`; in aiosqlite's thread, or on the loop's (`in_loop`), where a BEGIN that finds
    the write lock taken raises `_Busy` at once rather than wait for it."""
    cursor = connection._conn.cursor()
    try:
        if begin and in_loop:
            _begin_at_once(cursor)
        elif begin:
            cursor.execute("BEGIN IMMEDIATE")
        for step in statements:
            operation, rows = step(cursor) if callable(step) else step
            if rows:
                cursor.executemany(operation, rows)
        if commit:
            cursor.execute("COMMIT")
    finally:
        cursor.close()


def _begin_at_once(cursor: sqlite3.Cursor) -> None:
    """BEGIN IMMEDIATE, or `_Busy` if it would have to wait (only another process can hold
    the lock: this one's writers take turns with the pool's one connection)."""
    cursor.execute("PRAGMA busy_timeout=0")
    try:
        cursor.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY:
            raise _Busy from exc
        raise
    finally:
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


def _made(
    table: Table, make: RowsMade, dialect: sqlalchemy.Dialect, cursor: sqlite3.Cursor
) -> tuple[str, list[Any]]:
    """In `_run_writes`: the INSERT of the rows `make` makes, and their values."""
    rows = make(cursor)
    if not rows:
        return "", []
    operation, values_of = _sqlite_write(table, tuple(rows[0]), dialect)
    return operation, [values_of(row) for row in rows]


# What `write_together` writes: a table's rows to insert, or a statement (an UPDATE, an
# upsert, a DELETE: its values and keys bound by name, `bindparam`) with a row of those names
# per execution; on SQLite, a table's rows may be made in the call to the driver instead
# (`RowsMade`).
Writes = Sequence[tuple[Table | UpdateBase, Sequence[Mapping[str, Any]] | RowsMade]]


class NothingChanged(Exception):
    """`write_together`'s first statement changed no row: nothing was written."""


async def write_together(
    session: AsyncSession,
    writes: Writes,
    *,
    commit: bool = False,
    first: tuple[UpdateBase, Mapping[str, Any]] | None = None,
) -> dict[str, Any] | None:
    """Insert each table's rows and run each statement with its rows, in order, in the
    session's transaction; on SQLite in one call to the driver, on the loop's thread.

    SQLAlchemy sends each statement in a call of its own, each a wait for the thread and then
    for a turn of the event loop, and takes each row through its compiled statement: a
    household's report (items, raw answers, query log, report, events) took 4.7 ms of its 81
    (bench/verification.py, stop 35), and three tables of 44 rows 2.5-3.1 ms of CPU, 1.4-1.8
    in one call. The values still go through the bound parameters' own type processors, so
    the rows stored are the same.

    On the loop's thread, not aiosqlite's: these are a unit's writes by key, a few rows to a
    few hundred, and sqlite3 holds the GIL for much of them anyway (it converts each row's
    values). A call to the thread cost the loop more than the writes themselves: with the
    registry's filings and changes written so, its CPU per filing and change fell from 3.8-4.4
    ms to 2.8-3.0 (bench/registry.py, SQLite). The call holds the connection's mutex, so no
    statement runs in the thread meanwhile. Another process may hold the write lock (a
    command, a migration): a BEGIN that would wait for it goes to the thread instead, where
    the wait holds nothing else up; and the WAL is checkpointed in a thread (`_Checkpoints`).

    A table's rows have the same keys; a column they leave out gets its database default, so
    one with a Python-side default must be given (checked).

    `commit`: these are the transaction's last writes, and on SQLite its COMMIT goes in the
    same call (one call less); the unit of work's commit, which must follow, then only ends
    the session's transaction. Elsewhere the unit of work's commit commits.

    `first`, SQLite only: a statement that must change a row and return it (an UPDATE of one
    row by key and version, RETURNING it; its values bound by name, as the statements among
    `writes`) with its values, run before the writes in the same call: the row it returned,
    as SQLAlchemy gives it. If it returns none, nothing is written and NothingChanged is
    raised; the transaction goes on (a savepoint around it too).
    """
    writes = [(statement, rows) for statement, rows in writes if rows]
    if session.get_bind().dialect.name != "sqlite":
        if first is not None:
            raise TypeError("a first statement goes in the driver's call on SQLite only")
        for statement, rows in writes:
            if callable(rows):
                raise TypeError("rows are made in the call to the driver on SQLite only")
            await session.execute(
                sqlalchemy.insert(statement) if isinstance(statement, Table) else statement,
                list(rows),
            )
        return None
    connection = await session.connection()
    statements: list[_Step] = []
    returned: list[Any] = []
    if first is not None:
        change, values = first
        operation, values_of = _sqlite_write(change, tuple(values), connection.dialect)
        statements.append(functools.partial(_one_returned, operation, values_of(values), returned))
    for statement, rows in writes:
        if callable(rows):
            assert isinstance(statement, Table)
            statements.append(functools.partial(_made, statement, rows, connection.dialect))
            continue
        operation, values_of = _sqlite_write(statement, tuple(rows[0]), connection.dialect)
        statements.append((operation, [values_of(row) for row in rows]))
    fairy = await connection.get_raw_connection()
    adapted: _OneTripConnection = fairy.dbapi_connection  # type: ignore[assignment]
    driver: aiosqlite.Connection = adapted._connection  # type: ignore[assignment]
    async with adapted._execute_mutex:
        begin, adapted.begin_immediate = adapted.begin_immediate, False
        try:
            try:
                _run_writes(driver, statements, begin, commit, in_loop=True)
            except _Busy:
                await driver._execute(_run_writes, driver, statements, begin, commit)  # type: ignore[no-untyped-call]
        except sqlite3.Error as exc:  # as SQLAlchemy would raise it (IntegrityError, …)
            raise DBAPIError.instance(
                next((step[0] for step in statements if not callable(step)), "COMMIT"),
                None,
                exc,
                sqlite3.Error,
                dialect=connection.dialect,
            ) from exc
        except NothingChanged:
            raise  # nothing written: the transaction (its BEGIN sent) is the unit's to end
        except BaseException:
            # Cancelled while the call to the thread waited: it still runs there, its BEGIN
            # included, whatever the session does next. A rollback queued behind it undoes it.
            await asyncio.shield(driver.rollback())
            raise
    if commit:
        adapted.committed()
    if first is None:
        return None
    return _returned_row(first[0], connection.dialect)(returned[0])


def _one_returned(
    operation: str, parameters: list[Any], returned: list[Any], cursor: sqlite3.Cursor
) -> tuple[str, list[Any]]:
    """In `_run_writes`: a statement that must return a row, kept in `returned`; nothing for
    it to write after it."""
    rows = cursor.execute(operation, parameters).fetchall()
    if not rows:
        raise NothingChanged
    returned.append(rows[0])
    return "", []


@functools.lru_cache(maxsize=16)
def _returned_row(
    statement: UpdateBase, dialect: sqlalchemy.Dialect
) -> Callable[[Sequence[Any]], dict[str, Any]]:
    """What makes the row a statement returned into its values by name, each through its
    type's result processor where the type has one (dates, JSON), as SQLAlchemy reads it."""
    names, columns = zip(*statement.exported_columns.items(), strict=True)
    processors = [
        (n, process)
        for n, column_ in enumerate(columns)
        if (process := column_.type.dialect_impl(dialect).result_processor(dialect, None))
    ]

    def row_of(raw: Sequence[Any]) -> dict[str, Any]:
        values = list(raw)
        for n, process in processors:
            values[n] = process(values[n])
        return dict(zip(names, values, strict=True))

    return row_of


@functools.lru_cache(maxsize=64)
def _sqlite_write(
    statement: Table | UpdateBase, keys: tuple[str, ...], dialect: sqlalchemy.Dialect
) -> tuple[str, Callable[[Mapping[str, Any]], list[Any]]]:
    """The INSERT of these columns (or the statement) in SQLite's paramstyle, and what makes a
    row's parameters of it: its values in the statement's order, each through its type's
    processor where the type has one."""
    if isinstance(statement, Table):
        for column_ in statement.c:
            if column_.name not in keys and column_.default is not None:
                raise ValueError(
                    f"{statement.name}.{column_.name} has a Python-side default: give it"
                )
        compiled = sqlalchemy.insert(statement).compile(dialect=dialect, column_keys=list(keys))
    else:
        compiled = statement.compile(dialect=dialect)
    order = compiled.positiontup or []  # the statement's order, not the keys'
    if sorted(order) != sorted(keys):
        raise ValueError(f"{statement}: not a parameter each: {sorted(set(keys) ^ set(order))}")
    processors = []
    for n, key in enumerate(order):
        impl = compiled.binds[key].type.dialect_impl(dialect)
        if process := impl.bind_processor(dialect):
            processors.append((n, _faster(impl, process)))
    pick = operator.itemgetter(*order)

    def values_of(row: Mapping[str, Any]) -> list[Any]:
        # One C call for the values, then only the few processed (dates, JSON): a generator
        # over every key was most of the rows' cost.
        values = list(pick(row)) if len(order) > 1 else [pick(row)]
        for n, process in processors:
            values[n] = process(values[n])
        return values

    return str(compiled), values_of


def _faster(impl: Any, process: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """SQLite's DATETIME processor in its default storage format, by `isoformat`: the same text
    (`YYYY-MM-DD HH:MM:SS.ffffff`, the wall time without its zone) in a fifth of the time.
    A report's rows hold some 180 times, 0.45 ms of a household's after its last answer
    (bench/verification.py, stop 44). Anything but a `datetime` goes through the original."""
    if not isinstance(impl, sqlite.DATETIME) or impl._storage_format != _SQLITE_DATETIME_FORMAT:
        return process

    def process_datetime(value: Any) -> Any:
        if type(value) is datetime:
            return value.isoformat(" ", "microseconds")[:26]
        return process(value)

    return process_datetime


_SQLITE_DATETIME_FORMAT = sqlite.DATETIME._storage_format


# Commits between two checkpoints of a SQLite file's WAL (`_Checkpoints`). SQLite's own
# threshold is 1,000 pages: `bangfu up --demo` left WALs of 4 MB with it and of 12-20 MB
# with a checkpoint every 64 commits; the registry's bench ran no slower at 16
# (bench/registry.py, SQLite: 0.69-0.72 against 0.63-0.71).
CHECKPOINT_EVERY = 16


class _Checkpoints:
    """A SQLite file's WAL checkpointed in a worker thread, every CHECKPOINT_EVERY commits.

    SQLite checkpoints by itself in the commit that takes the WAL past 1,000 pages, in that
    commit's call: on the loop's thread (`write_together`) the loop waited for the copy and its
    fsync, 4-8 ms at about one commit in 65 (bench/registry.py, SQLite). So the pool's
    connection does not, and a PASSIVE checkpoint (it waits for no reader and no writer) runs
    on a connection of its own instead. Closing the last connection checkpoints too.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._commits = 0
        self._running = False

    def committed(self) -> None:
        self._commits += 1
        if self._commits < CHECKPOINT_EVERY or self._running:
            return
        self._commits, self._running = 0, True
        # A thread of its own, not the loop's default executor: that one's few workers can all
        # be busy with other blocking work (to_thread, getaddrinfo), the checkpoint queued
        # behind them while the WAL grows (a CI run of the whole suite).
        threading.Thread(target=self._checkpoint, name="sqlite-checkpoint").start()

    def _checkpoint(self) -> None:
        try:
            timeout = BUSY_TIMEOUT_MS / 1000
            with contextlib.closing(sqlite3.connect(self._path, timeout=timeout)) as connection:
                connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as error:
            log.warning("sqlite.checkpoint_failed", path=self._path, error=repr(error))
        finally:
            self._running = False


class _OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """SQLAlchemy's aiosqlite cursor, each statement one call to aiosqlite's thread.

    SQLAlchemy's own makes four (open the cursor, execute, fetch, close), and each waits for
    the thread to get the GIL and then for a turn of the event loop: on a busy loop a
    statement waited up to four switch intervals (5 ms each), a transaction a dozen
    (bench/events.py on SQLite).
    """

    __slots__ = ("_description", "_rowcount", "_lastrowid", "_arraysize")

    def __init__(self, adapt_connection: AsyncAdapt_aiosqlite_connection):
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]  # none is kept between calls
        self._soft_closed_memoized = immutabledict()
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self._arraysize = 1

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        return self._lastrowid  # type: ignore[return-value]  # None before an INSERT

    @property
    def arraysize(self) -> int:
        return self._arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._arraysize = value

    async def _execute_async(self, operation: Any, parameters: Any) -> None:
        await self._run(operation, parameters, many=False)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> None:
        await self._run(operation, seq_of_parameters, many=True)

    async def _run(self, operation: Any, parameters: Any, *, many: bool) -> None:
        connection: aiosqlite.Connection = self._connection  # type: ignore[assignment]
        adapted: _OneTripConnection = self._adapt_connection  # type: ignore[assignment]
        async with adapted._execute_mutex:
            begin, adapted.begin_immediate = adapted.begin_immediate, False
            outcome = await connection._execute(  # type: ignore[no-untyped-call]  # its thread
                _run_statement, connection, operation, parameters, many, begin
            )
        self._description, rows, self._rowcount, self._lastrowid = outcome
        self._rows = collections.deque(rows)

    async def _async_soft_close(self) -> None:
        """Nothing to close: the statement's cursor was closed in the thread."""

    def close(self) -> None:
        self._rows.clear()


class _OneTripConnection(AsyncAdapt_aiosqlite_connection):
    """aiosqlite's connection as SQLAlchemy adapts it; its transaction begins with its first
    statement, in the same call to the driver (a call less a transaction)."""

    __slots__ = ("begin_immediate", "checkpoints")
    _cursor_cls = _OneTripCursor  # type: ignore[assignment]  # a subclass of the declared

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        self.begin_immediate = False  # a transaction begun, its BEGIN not yet sent
        self.checkpoints: _Checkpoints | None = None  # a file's (set when connected)

    def committed(self) -> None:
        """A transaction was committed on this connection."""
        if self.checkpoints is not None:
            self.checkpoints.committed()

    @property
    def _driver_in_transaction(self) -> bool:
        # Read without the driver's thread: no statement is running.
        driver = self._connection._connection
        return driver is not None and driver.in_transaction

    def commit(self) -> None:
        # Nothing to commit when no statement ran since the begin (its BEGIN never sent) or
        # `write_together(commit=True)` committed already: no call to the thread then.
        self.begin_immediate = False
        if self._driver_in_transaction:
            super().commit()
            self.committed()

    def rollback(self) -> None:
        # SQLAlchemy rolls back every connection given back to its pool, after a commit too,
        # and a session closed rolls back again: a call to the thread each, for nothing when
        # no transaction is open.
        self.begin_immediate = False
        if self._driver_in_transaction:
            super().rollback()


class _OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """aiosqlite as SQLAlchemy adapts it, with `_OneTripCursor` for its cursors."""

    def connect(self, *arg: Any, **kw: Any) -> _OneTripConnection:
        return _OneTripConnection(self, super().connect(*arg, **kw)._connection)


class UnitOfWork:
    """One transaction (none for a unit of one write on PostgreSQL: `Database.unit_of_work`)
    and the events it will publish; committed in one place only."""

    def __init__(
        self,
        session: AsyncSession,
        *,
        after_commit: AfterCommit | None = None,
        publish_at_once: AfterCommit | None = None,
        one_write: bool = False,
        read_apart: ReadApart | None = None,
    ) -> None:
        self.session = session
        self._after_commit = after_commit
        self._publish_at_once = publish_at_once
        self._one_write = one_write  # `Database.unit_of_work`
        self._read_apart = read_apart
        self._pending_events: list[Any] = []
        self._taken_events: list[Any] = []

    async def read_committed(
        self, statement: Executable, parameters: Mapping[str, Any] | None = None
    ) -> list[RowMapping]:
        """The rows of a short read by key of what is committed, before the unit's first
        statement: outside the unit's transaction where the database allows
        (`Database.read_apart`), else, and once the unit has begun, in the session.
        """
        # A unit of one write on PostgreSQL has no transaction: its session reads apart as it is.
        if (
            self._read_apart is not None
            and not self.autocommit
            and not self.session.in_transaction()
        ):
            rows = await self._read_apart(statement, parameters or {})
            if rows is not None:
                return rows
        return list((await self.session.execute(statement, parameters)).mappings())

    @property
    def one_write(self) -> bool:
        """The unit writes once (`Database.unit_of_work`): its write is its last."""
        return self._one_write

    @property
    def autocommit(self) -> bool:
        """Each statement commits on its own (one write, on PostgreSQL): nothing undoes a
        statement's part, so a statement that cannot do all of its work must fail."""
        return self._one_write and self.session.get_bind().dialect.name == "postgresql"

    def publish(self, *events: Any) -> None:
        """Queue CloudEvents for the outbox; they are written in this transaction's commit."""
        self._pending_events.extend(events)

    def take_events(self) -> list[Any]:
        """The queued events, handed to a statement that writes their outbox rows itself (one
        round trip less); the commit then only wakes the relay for them."""
        events, self._pending_events = self._pending_events, []
        self._taken_events += events
        return events

    @contextlib.asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """A part of the transaction that an error undoes alone, with the events it queued."""
        if self._one_write:
            raise RuntimeError("a unit of work of one write has no transaction to take part of")
        queued, taken = list(self._pending_events), list(self._taken_events)
        try:
            async with self.session.begin_nested():
                yield
        except BaseException:
            self._pending_events, self._taken_events = queued, taken
            raise

    async def commit(self) -> None:
        from shared.events.outbox import outbox, outbox_rows  # outbox imports this module

        events = self._taken_events + self._pending_events
        if self._pending_events:
            if self._one_write:
                # Their outbox rows would be a second write, committed apart from the first.
                raise RuntimeError("a unit of work of one write takes its events with the write")
            # On SQLite the COMMIT goes with the rows, in one call to the driver: a
            # call less for every change that announces itself (a request for a verification:
            # 0.3-0.5 ms, bench/verification.py). The session's commit then ends its own.
            rows = outbox_rows(self._pending_events)
            await write_together(self.session, [(outbox, rows)], commit=True)
            self._pending_events = []
        await self.session.commit()
        self._taken_events = []
        # Only a unit of one write: its statement committed as it ran, when it found no
        # earlier event of an aggregate unsent; in a transaction one may be sent meanwhile.
        at_once = set(self.session.info.pop(OUTBOX_AT_ONCE, ()))
        if at_once and self.autocommit and self._publish_at_once:
            self._publish_at_once([e for e in events if e.id in at_once])
        if events and self._after_commit:
            self._after_commit(events)

    async def rollback(self) -> None:
        self._pending_events = []
        self._taken_events = []
        self.session.info.pop(OUTBOX_AT_ONCE, None)
        await self.session.rollback()


class Database:
    """The engine and session factory a service's lifespan owns."""

    def __init__(self, url: str, *, schema: str | None = None):
        self.url = url
        self.schema = schema
        self.engine = create_engine(url, schema=schema)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        # PostgreSQL: the units of work by key have a pool of their own, whose connections keep
        # a cached statement's generic plan (`unit_of_work`). Sharing one pool, a connection
        # was switched with a SET, a round trip, whenever a unit of the other kind had it last:
        # the pool hands its connections round, so nearly every unit paid one (a household's
        # check two, bench/verification.py). SQLite: one connection, no plans.
        self.by_key_engine = (
            self.engine
            if is_sqlite(url)
            else create_engine(url, schema=schema, settings={"plan_cache_mode": GENERIC_PLANS})
        )
        self._by_key_sessionmaker = async_sessionmaker(self.by_key_engine, expire_on_commit=False)
        # SQLite keeps its transaction: its writes are several statements (see `unit_of_work`).
        self._autocommit = (
            self.by_key_engine
            if is_sqlite(url)
            else self.by_key_engine.execution_options(isolation_level="AUTOCOMMIT")
        )
        self._autocommit_sessionmaker = async_sessionmaker(self._autocommit, expire_on_commit=False)
        self.after_commit: AfterCommit | None = None
        # Given the events a unit of one write may publish at once (`OutboxRelay`).
        self.publish_at_once: AfterCommit | None = None
        self._claims: AsyncEngine | None = None
        self._reads: sqlalchemy.Engine | None = None  # `read_in_loop`
        self._file_reads = is_sqlite(url) and ":memory:" not in url

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextlib.asynccontextmanager
    async def unit_of_work(
        self, *, by_key: bool = False, one_write: bool = False
    ) -> AsyncIterator[UnitOfWork]:
        """A unit of work; closing its session rolls back whatever was not committed.

        `by_key`: every statement finds its rows by key (an id, a version, a blind index),
        so no plan depends on the values, and PostgreSQL may keep a cached statement's
        generic plan instead of planning each execution anew: planning a filing's statement
        was about a third of PostgreSQL's time per filing (bench/registry.py).

        `one_write` (implies `by_key`): on PostgreSQL the unit writes with one statement that
        also writes its events' outbox rows (`UnitOfWork.take_events`) and fails or does
        nothing unless what it depends on holds (the version it read, a person free), so each
        statement may commit on its own: no BEGIN and COMMIT round trips, two of a change's
        four (bench/registry.py). A read before the write sees what was committed, as it
        would in a READ COMMITTED transaction. On SQLite, whose writes are several
        statements, the unit is a transaction as any other, whose write may send the COMMIT
        with its last rows (`UnitOfWork.one_write`, `write_together(commit=True)`).
        """
        if one_write:
            sessions = self._autocommit_sessionmaker
        else:
            sessions = self._by_key_sessionmaker if by_key else self.sessionmaker
        async with sessions() as session:
            yield UnitOfWork(
                session,
                after_commit=self.after_commit,
                publish_at_once=self.publish_at_once,
                one_write=one_write,
                read_apart=self.read_apart,
            )

    async def read_apart(
        self, statement: Executable, parameters: Mapping[str, Any]
    ) -> list[RowMapping] | None:
        """The rows of a short read by key of what is committed, in no unit's transaction; None
        where that cannot be (an in-memory SQLite, a busy file): the caller's session reads.

        On a SQLite file, on the loop's thread (`read_in_loop`): in a session it would be a
        call to the driver's thread, and begin a transaction, which holds the database's write
        lock from its first statement (a request for a verification read its members'
        consents so: 1.3 ms of its caller's wait, bench/verification.py). On PostgreSQL, on a
        connection of the units of one write, with no transaction: in a session its BEGIN
        would be a round trip before it (a request for a verification put its first question
        to a department 0.2-0.7 ms sooner without, bench/verification.py); its plan is kept.
        Through a connection, not a session, which has nothing to track for a read: 0.05-0.1 ms
        of CPU less a read (the verification request's consents, 1,000 reads, three rounds).
        """
        if self._file_reads:
            try:
                return [row._mapping for row in self.read_in_loop(statement, parameters)]
            except sqlalchemy.exc.OperationalError:  # busy: another process holds the file
                return None
        if is_sqlite(self.url):
            return None
        async with self._autocommit.connect() as connection:
            return list((await connection.execute(statement, parameters)).mappings())

    def read_in_loop(self, statement: Executable, parameters: Mapping[str, Any]) -> list[Any]:
        """SQLite: the rows of a short read, run on the calling (event loop's) thread, on a
        connection of its own to the database file (not for `:memory:`, which would be another
        database); for reads of a millisecond or two only, as the loop waits.

        A reader in WAL mode waits for no writer. On the pool's one connection the read
        waited behind every writer queued for it; on an aiosqlite connection of its own its
        thread took the GIL from the writers at each read (bench/events.py, the relay's read
        of new events at 500 events/s: p99 35-40 ms, the rate offered kept in 1 run of 3;
        here 20-33 ms, kept in 2 of 3). A read that finds the database busy (another process
        recovering its WAL) raises after a short wait rather than hold the loop.
        """
        if self._reads is None:
            self._reads = sqlalchemy.create_engine(
                self.url.replace("+aiosqlite", ""),
                connect_args={"timeout": 0.1},
                json_deserializer=json_value,  # JSON columns as the units read them
            )
            event.listen(self._reads, "connect", _query_only)
        with self._reads.connect() as connection:
            return list(connection.execute(statement, parameters).all())

    @contextlib.asynccontextmanager
    async def claiming(self) -> AsyncIterator[AsyncSession]:
        """PostgreSQL: a transaction for claiming rows from a queue table, on a connection of
        its own whose planner may only scan by index.

        A row taken from a queue leaves its entry in the queue's partial index until VACUUM.
        A bitmap or sequential scan, which the planner picks when its statistics expect few
        rows, reads every such entry at every claim; an index scan marks them dead once, then
        skips them (bench/events.py). Set when connecting, not per transaction: a statement
        more per claim cost the registry's writes 2-3 % (bench/registry.py).

        A claim's plan depends on none of its values, so a cached statement keeps a generic
        plan: planned anew, the relay's claim of one row took 0.39-0.43 ms, 0.22 with its plan
        kept (asyncpg, the bench machine's PostgreSQL), on the way of every event to the broker.
        """
        if self._claims is None:
            self._claims = create_engine(
                self.url,
                schema=self.schema,
                pool_size=1,
                settings={**INDEX_SCANS_ONLY, "plan_cache_mode": GENERIC_PLANS},
            )
        async with AsyncSession(self._claims, expire_on_commit=False) as session, session.begin():
            yield session

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self.by_key_engine is not self.engine:
            await self.by_key_engine.dispose()
        if self._claims is not None:
            await self._claims.dispose()
        if self._reads is not None:
            self._reads.dispose()
