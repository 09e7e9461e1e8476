"""The registry's result consumers: which verification reports it takes in (those about a
filed household only), and how a batch's results attach to their files."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event as event_module
from sqlalchemy import select

from services.registry import store
from services.registry.consumers import filed_households, subscriptions
from services.registry.settings import RegistrySettings
from services.registry.store import history
from shared.db import Database
from shared.events.envelope import CloudEvent, new_event
from shared.observability import new_traceparent, set_current_traceparent
from tests.helpers import bearer, household_body


def _completed(household_id: str | None) -> CloudEvent:
    return new_event(
        service="verification",
        aggregate="verification",
        name="completed",
        subject="v-1",
        region="411302",
        sequence=1,
        data={"household_id": household_id, "report_version": 1},
    )


async def test_a_check_of_members_given_inline_is_not_taken_in(tmp_path: Path) -> None:
    inline, filed, other = _completed(None), _completed("h-1"), _completed("h-2")
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/registry.db")
    try:
        async with db.unit_of_work() as uow:
            assert await filed_households([inline, filed, other], uow) == {filed.id, other.id}
    finally:
        await db.dispose()


def test_the_verification_consumer_leaves_inline_checks_out(
    registry_settings: RegistrySettings,
) -> None:
    (verification,) = [
        s for s in subscriptions(registry_settings) if s.name == "registry-verification-completed"
    ]
    assert verification.wanted is filed_households


def _result(name: str, household_id: str, data: dict[str, Any]) -> CloudEvent:
    aggregate = "verification" if name == "completed" else "entitlements"
    service_name = "verification" if name == "completed" else "benefits"
    return new_event(
        service=service_name,
        aggregate=aggregate,
        name=name,
        subject="s-1",
        region="411302",
        sequence=1,
        data={"household_id": household_id, **data},
    )


async def _handled(
    settings: RegistrySettings, events: list[CloudEvent], *, batch: bool
) -> tuple[list[CloudEvent], list[str], list[str]]:
    """The events handled by the registry's result consumers, in one batch scope each or one
    by one, each in a trace of its own: the events published, the traceparents the handling
    ran in, and the statements run (executemany counted once)."""
    by_name = {s.name: s for s in subscriptions(settings)}
    consumer = {
        "completed": by_name["registry-verification-completed"],
        "determined": by_name["registry-entitlements-determined"],
    }
    db = Database(settings.database_url, schema=settings.database_schema)
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(" ".join(statement.split()[:3]))

    traces = [new_traceparent() for _ in events]
    published: list[CloudEvent] = []
    try:
        for name in ("completed", "determined"):
            mine = [
                (e, t) for e, t in zip(events, traces, strict=True) if e.type.split(".")[-2] == name
            ]
            sub = consumer[name]
            assert sub.batch is not None
            async with db.unit_of_work() as uow:
                event_module.listen(db.engine.sync_engine, "before_cursor_execute", count)
                scope = (
                    sub.batch([e for e, _ in mine], uow, None)
                    if batch
                    else contextlib.nullcontext()
                )
                async with scope:
                    for event, trace in mine:
                        set_current_traceparent(trace)
                        await sub.handler(event, uow)
                set_current_traceparent(None)
                event_module.remove(db.engine.sync_engine, "before_cursor_execute", count)
                published += uow.take_events()
                await uow.commit()
    finally:
        await db.dispose()
    return published, traces, statements


async def _attached(settings: RegistrySettings, household_ids: list[str]) -> list[Any]:
    db = Database(settings.database_url, schema=settings.database_schema)
    try:
        async with db.unit_of_work() as uow:
            files = {h: await store.get_household(uow.session, h) for h in household_ids}
            rows = await uow.session.execute(
                select(history.c.household_id, history.c.version, history.c.actor, history.c.action)
                .where(history.c.action.like("%_attached"))
                .order_by(history.c.id)
            )
            return [
                [(h, f["verification"], f["entitlements"], f["version"]) for h, f in files.items()],
                [tuple(r) for r in rows],
            ]
    finally:
        await db.dispose()


@pytest.mark.parametrize("batch", [True, False], ids=["batch", "one-by-one"])
async def test_results_attach_in_a_batch_as_one_by_one_in_three_statements(
    registry: httpx.AsyncClient,
    registry_settings: RegistrySettings,
    token: Callable[..., str],
    batch: bool,
) -> None:
    """A fetched batch's results are attached together at its end: the file keeps the last
    value given, and each result still writes its history row and its event, in the trace of
    the event that brought it. One not held here writes nothing. The batch's statements do not
    grow with its events."""
    headers = bearer(token("registry:write", "registry:read"))
    first, second = [
        (await registry.post("/v1/households", json=household_body(region), headers=headers)).json()
        for region in ("411302", "411303")
    ]
    one, two = first["id"], second["id"]
    events = [
        _result("completed", one, {"report_version": 1}),
        _result("completed", two, {"report_version": 1, "discrepancies": ["income"]}),
        _result("completed", "not-held-here", {"report_version": 1}),
        _result("determined", two, {"measures": ["a"]}),
        _result("completed", one, {"report_version": 2}),
    ]

    published, traces, statements = await _handled(registry_settings, events, batch=batch)
    files, history_rows = await _attached(registry_settings, [one, two])

    assert [(e.subject, e.sequence, e.data["fields"], e.region) for e in published] == [
        (one, 1, ["verification"], first["location"]["region"]),
        (two, 1, ["verification"], second["location"]["region"]),
        (one, 1, ["verification"], first["location"]["region"]),
        (two, 1, ["entitlements"], second["location"]["region"]),
    ]
    assert [e.traceparent for e in published] == [traces[0], traces[1], traces[4], traces[3]]
    [(_, verified_one, none, v1), (_, verified_two, card, v2)] = files
    assert (verified_one["report_version"], verified_one["needs_review"], none, v1) == (
        2,
        False,
        None,
        1,
    )
    assert (verified_two["report_version"], verified_two["needs_review"], v2) == (1, True, 1)
    assert card["measures"] == ["a"] and card["household_id"] == two
    assert history_rows == [
        (one, 1, "/bangfu/verification", "verification_attached"),
        (two, 1, "/bangfu/verification", "verification_attached"),
        (one, 1, "/bangfu/verification", "verification_attached"),
        (two, 1, "/bangfu/benefits", "entitlements_attached"),
    ]
    writes = [s for s in statements if not s.startswith(("BEGIN", "COMMIT", "SAVEPOINT"))]
    # The verification consumer's four results (one not held) and benefits' one.
    per_result = [
        "UPDATE household SET",
        "SELECT household.id, household.version,",
        "INSERT INTO history",
    ]
    if batch:
        assert writes == per_result + per_result
    else:
        assert len(writes) == 3 * 5 - 1  # the one not held is written no history
