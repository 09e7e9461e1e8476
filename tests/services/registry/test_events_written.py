"""A change's events are written by the change's own statement (on PostgreSQL) or beside it
(SQLite), and the relay publishes exactly the changes that were committed, in order."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from typing import Any

import httpx
import nats
import pytest
from sqlalchemy import func, select

from services.registry.app import create_app
from services.registry.settings import RegistrySettings
from shared.db import Database, _run_statement, _run_writes
from shared.events.outbox import outbox
from tests.conftest import POSTGRES_URL, running
from tests.helpers import CountedQueue, Traced, bearer, counted_calls, household_body

WRITE = ("registry:write", "registry:read")


async def test_each_committed_change_is_published_once_and_a_refused_one_not_at_all(
    registry: httpx.AsyncClient,
    registry_settings: RegistrySettings,
    token: Callable[..., str],
    nats_url: str,
) -> None:
    nc = await nats.connect(nats_url)
    sub = await nc.subscribe("bangfu.registry.household.>")
    headers = bearer(token(*WRITE))
    filed = await registry.post("/v1/households", json=household_body(), headers=headers)
    url = f"/v1/households/{filed.json()['id']}"
    first = await registry.patch(
        url, json={"category": "dibao_edge"}, headers={**headers, "If-Match": '"1"'}
    )
    stale = await registry.patch(
        url, json={"causes": ["education"]}, headers={**headers, "If-Match": '"1"'}
    )
    second = await registry.patch(
        url, json={"causes": ["education"]}, headers={**headers, "If-Match": '"2"'}
    )
    events = [json.loads((await sub.next_msg(timeout=5)).data) for _ in range(3)]
    await asyncio.sleep(0.3)  # a fourth would have been relayed with the third
    extra = sub.pending_msgs
    await nc.close()

    assert [r.status_code for r in (filed, first, stale, second)] == [201, 200, 412, 200]
    assert [(e["type"].split(".")[-2], e["sequence"]) for e in events] == [
        ("applied", 1),
        ("changed", 2),
        ("changed", 3),
    ]
    assert {e["subject"] for e in events} == {filed.json()["id"]}
    assert extra == 0
    database = Database(registry_settings.database_url, schema=registry_settings.database_schema)
    async with database.unit_of_work() as uow:
        rows = await uow.session.scalar(
            select(func.count()).where(outbox.c.aggregate == filed.json()["id"])
        )
    await database.engine.dispose()
    assert rows == 3


async def test_a_result_attached_keeps_the_version_and_one_for_a_file_not_held_writes_nothing(
    registry: httpx.AsyncClient,
    registry_settings: RegistrySettings,
    token: Callable[..., str],
) -> None:
    from services.registry import service
    from services.registry.store import history

    headers = bearer(token(*WRITE))
    filed = (await registry.post("/v1/households", json=household_body(), headers=headers)).json()
    await registry.patch(
        f"/v1/households/{filed['id']}",
        json={"category": "dibao_edge"},
        headers={**headers, "If-Match": '"1"'},
    )
    database = Database(registry_settings.database_url, schema=registry_settings.database_schema)
    try:
        async with database.unit_of_work() as uow:
            held = await service.attach(
                uow, [service.Attachment(filed["id"], "verification", {"v": 1}, source="x")]
            )
            elsewhere = await service.attach(
                uow, [service.Attachment("not-held-here", "verification", {}, source="x")]
            )
            events = uow.take_events()
            await uow.commit()
        async with database.unit_of_work() as uow:
            attached = (
                await uow.session.execute(
                    select(history.c.household_id, history.c.version).where(
                        history.c.action == "verification_attached"
                    )
                )
            ).all()
    finally:
        await database.engine.dispose()
    assert (held, elsewhere) == ({filed["id"]}, set())
    assert [(e.subject, e.sequence, e.data["fields"]) for e in events] == [
        (filed["id"], 2, ["verification"])
    ]
    assert events[0].region == filed["location"]["region"]
    assert attached == [(filed["id"], 2)]
    shown = (await registry.get(f"/v1/households/{filed['id']}", headers=headers)).json()
    assert (shown["version"], shown["verification"]) == (2, {"v": 1})


async def test_a_change_that_finds_its_version_moved_on_writes_nothing_even_uncommitted(
    registry: httpx.AsyncClient,
    registry_settings: RegistrySettings,
    token: Callable[..., str],
) -> None:
    """A PATCH reads the file, then writes if its version is still the one read. Another
    change may land between the two: the write then writes nothing, history included, since a
    unit of one write has no transaction to roll back on PostgreSQL."""
    from services.registry import store
    from shared.registry_client import ATTACHED_RESULTS

    headers = bearer(token(*WRITE))
    filed = (await registry.post("/v1/households", json=household_body(), headers=headers)).json()
    url = f"/v1/households/{filed['id']}"
    moved = await registry.patch(
        url, json={"category": "dibao_edge"}, headers={**headers, "If-Match": '"1"'}
    )
    database = Database(registry_settings.database_url, schema=registry_settings.database_schema)
    try:
        async with database.unit_of_work(one_write=True) as uow:
            current = await store.get_household(uow.session, filed["id"])
            assert current is not None
            skipped = ("id", "created_at", *ATTACHED_RESULTS)
            row = {k: v for k, v in current.items() if k not in skipped}
            change = {"version": 2, "actor": "late", "action": "changed", "comment": None}
            written = await store.update_household(
                uow.session,
                filed["id"],
                expected_version=1,  # as read before the other change landed
                row={**row, "version": 2, "category": "dibao"},
                history=[{"household_id": filed["id"], **change, "changes": []}],
            )
        # Closed without a commit: on SQLite that rolls back, on PostgreSQL there is nothing to.
        async with database.unit_of_work() as uow:
            versions = (
                await uow.session.execute(
                    select(store.history.c.version, store.history.c.actor)
                    .where(store.history.c.household_id == filed["id"])
                    .order_by(store.history.c.version)
                )
            ).all()
    finally:
        await database.engine.dispose()
    assert (moved.status_code, written) == (200, None)
    assert [version for version, _ in versions] == [1, 2]
    assert "late" not in {actor for _, actor in versions}
    shown = (await registry.get(url, headers=headers)).json()
    assert (shown["version"], shown["category"]) == (2, "dibao_edge")


@pytest.mark.skipif(not POSTGRES_URL, reason="SQLite has one writer: no exit commits between")
async def test_a_person_let_go_between_the_claim_and_the_look_up_is_claimed_not_left_free(
    registry: httpx.AsyncClient,
    registry_settings: RegistrySettings,
    token: Callable[..., str],
) -> None:
    """A claim skips a person another household holds; if that household's exit commits before
    the holder is looked up, the person is claimed then, not left for anyone to claim."""
    from services.registry import store

    headers = bearer(token(*WRITE))
    held = (await registry.post("/v1/households", json=household_body(), headers=headers)).json()
    database = Database(registry_settings.database_url, schema=registry_settings.database_schema)
    index = (await _claims(database))[held["id"]][0]
    try:
        async with database.unit_of_work() as uow:
            skipped = await store._claim(uow.session, "the-new-household", [index])
            async with database.unit_of_work() as exiting:  # the holder's exit, committed
                await store.release_persons(exiting.session, held["id"])
                await exiting.commit()
            await store._check_claimed(uow.session, "the-new-household", [index], skipped)
            await uow.commit()
        claims = await _claims(database)
    finally:
        await database.engine.dispose()
    assert skipped == []
    assert claims == {"the-new-household": [index]}


async def _claims(database: Database) -> dict[str, list[str]]:
    from services.registry.store import active_person

    async with database.unit_of_work() as uow:
        rows = (await uow.session.execute(select(active_person))).all()
    claims: dict[str, list[str]] = {}
    for index, household_id in rows:
        claims.setdefault(household_id, []).append(index)
    return claims


def _driver_calls(counted: CountedQueue) -> list[str]:
    """What each call to aiosqlite's thread ran for this task, in SQL words; then forgotten."""
    calls: list[str] = []
    for task, run in counted.runs:
        if task is not asyncio.current_task():  # the relay's, the DCI deliveries'
            continue
        if run.func is _run_statement:
            _, operation, _, _, begin = run.args
            calls.append(("BEGIN; " if begin else "") + " ".join(operation.split()[:3]))
        elif run.func is _run_writes:
            _, steps, begin, commit = run.args
            words = [" ".join(_operation(step).split()[:3]) for step in steps if _writes(step)]
            calls.append("; ".join(["BEGIN"] * begin + words + ["COMMIT"] * commit))
        else:
            calls.append(run.func.__name__.upper())  # the connection's own commit or rollback
    counted.runs.clear()
    return calls


def _in_loop(traced: list[Traced]) -> str:
    """The statements run on the loop's thread for this task, a statement's executions as
    one; then forgotten."""
    words: list[str] = []
    for statement in traced:
        if statement.task is asyncio.current_task() and words[-1:] != [statement.words]:
            words.append(statement.words)
    traced.clear()
    return "; ".join(words)


def _operation(step: Any) -> str:
    # A statement run in the thread first (`write_together(first=…)`) is a partial of it.
    return str(step.args[0]) if isinstance(step, functools.partial) else str(step[0])


def _writes(step: Any) -> bool:
    return isinstance(step, functools.partial) or bool(step[1])


@pytest.mark.skipif(bool(POSTGRES_URL), reason="the calls to SQLite's thread")
async def test_on_sqlite_a_filing_and_a_change_write_on_the_loops_thread_in_one_transaction(
    registry_settings: RegistrySettings, token: Callable[..., str]
) -> None:
    """Each call to aiosqlite's thread is a wake-up of it and one back, and cost the loop more
    than the writes (bench/registry.py): a filing claims its people, writes its rows and
    commits on the loop's thread; a change reads the file there (a connection of its own),
    then updates it, writes the rest and commits; neither calls the thread."""
    headers = bearer(token(*WRITE))
    app = create_app(registry_settings)
    async with running(app) as registry:
        async with counted_calls(app.state.runtime.db) as (counted, _, traced):
            filed = await registry.post("/v1/households", json=household_body(), headers=headers)
            filing = _driver_calls(counted), _in_loop(traced)
            changed = await registry.patch(
                f"/v1/households/{filed.json()['id']}",
                json={"category": "dibao_edge", "causes": ["education"]},
                headers={**headers, "If-Match": '"1"'},
            )
            change = _driver_calls(counted), _in_loop(traced)
    assert (filed.status_code, changed.status_code) == (201, 200)
    assert filing == (
        [],
        "BEGIN IMMEDIATE; INSERT INTO active_person; INSERT INTO household; "
        "INSERT INTO household_cause; INSERT INTO member; INSERT INTO history; "
        "INSERT INTO outbox; COMMIT",
    )
    assert change == (
        [],
        "BEGIN IMMEDIATE; UPDATE household SET; DELETE FROM household_cause; "
        "INSERT INTO household_cause; INSERT INTO history; INSERT INTO outbox; COMMIT",
    )
