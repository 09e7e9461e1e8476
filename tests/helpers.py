"""Small helpers the tests share."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date
from typing import Any

import sqlalchemy as sa

from shared.db import Database, create_engine
from shared.events.envelope import CloudEvent, new_event
from shared.identity import check_character


def identity_number(
    region: str = "411302", birth: date = date(1980, 5, 17), serial: int = 123
) -> str:
    """A valid GB 11643 number for tests (the check character computed, not hard-coded)."""
    body = f"{region}{birth:%Y%m%d}{serial:03d}"
    return body + check_character(body)


def code_block(text: str, language: str) -> str:
    """The one fenced code block of `language` in a Markdown text (docs' examples are run as
    tests: a second block of the language would be left unchecked, so it fails here)."""
    blocks = re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) == 1, f"one {language} block, found {len(blocks)}"
    return str(blocks[0])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def household_event(name: str, fields: list[str] | None = None) -> CloudEvent:
    """The registry's `household.<name>` event about household h-1, naming `fields` if given
    (a `changed` names the fields that changed)."""
    data: dict[str, Any] = {"household_id": "h-1", **({"fields": fields} if fields else {})}
    return new_event(
        service="registry",
        aggregate="household",
        name=name,
        subject="h-1",
        region="411302",
        sequence=2,
        data=data,
    )


def household_body(
    region: str = "411302",
    *,
    head_number: str | None = None,
    members: list[dict[str, object]] | None = None,
    **fields: object,
) -> dict[str, object]:
    """A valid filing: a head (and any extra members) in `region`."""
    head = {
        "name": "张三明",
        "identity_number": head_number or identity_number(region=region),
        "relation": "head",
    }
    return {
        "location": {"region": region, "address": "建设路12号"},
        "category": "dibao",
        "causes": ["illness"],
        "members": [head, *(members or [])],
        **fields,
    }


async def eventually(
    check: Callable[[], Awaitable[Any]], what: str = "", *, timeout: float = 30
) -> Any:
    """Await `check()` until it returns something truthy; that. `what` names it in the
    failure."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what or 'it'} did not happen within {timeout} s: {result!r}")
        await asyncio.sleep(0.1)


class CountedQueue:
    """aiosqlite's queue to its thread, counting the calls put on it and keeping what each
    runs (a `functools.partial` of a function and its arguments) and the task it ran for."""

    def __init__(self, queue: Any):
        self.queue, self.calls = queue, 0
        self.runs: list[tuple[asyncio.Task[Any] | None, functools.partial[Any]]] = []

    def put_nowait(self, item: Any) -> None:
        self.calls += 1
        self.runs.append((asyncio.current_task(), item[1]))
        self.queue.put_nowait(item)


@dataclasses.dataclass
class Traced:
    """A statement SQLite ran on the pool's connection: its first words, the task it ran for
    if it ran on the loop's thread (None in aiosqlite's)."""

    words: str
    task: asyncio.Task[Any] | None
    in_loop: bool


@contextlib.asynccontextmanager
async def counted_calls(
    db: Database,
) -> AsyncIterator[tuple[CountedQueue, Any, list[Traced]]]:
    """The calls to aiosqlite's thread on the pool's one connection, counted while inside;
    with that connection's driver and the statements it ran (its trace, pragmas left out)."""
    async with db.sessionmaker() as session:
        driver = (await (await session.connection()).get_raw_connection()).driver_connection
        assert driver is not None
    loop_thread = threading.get_ident()
    traced: list[Traced] = []

    def trace(statement: str) -> None:
        if statement.startswith("PRAGMA"):
            return
        in_loop = threading.get_ident() == loop_thread
        task = asyncio.current_task() if in_loop else None
        traced.append(Traced(" ".join(statement.split()[:3]), task, in_loop))

    counted = CountedQueue(driver._tx)
    driver._tx = counted
    driver._conn.set_trace_callback(trace)  # set from the loop's thread: no statement runs
    try:
        yield counted, driver, traced
    finally:
        driver._conn.set_trace_callback(None)
        driver._tx = counted.queue


async def table_names(url: str, schema: str | None) -> set[str]:
    """The tables of a database (of `schema` on PostgreSQL)."""
    engine = create_engine(url, schema=schema)
    try:
        async with engine.connect() as connection:
            names = await connection.run_sync(lambda c: sa.inspect(c).get_table_names())
    finally:
        await engine.dispose()
    return set(names)
