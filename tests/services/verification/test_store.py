"""The report's write (`store.write_reports`), on each database the suite runs on: PostgreSQL
writes it in one statement, SQLite in one call to its thread, and both must leave the same rows."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Text, cast, select, text

from services.verification import store
from services.verification.domain.departments import Department
from services.verification.service import _queued
from shared import audit
from shared.db import Database, as_utc
from shared.events.envelope import CloudEvent
from shared.events.outbox import outbox

NOW = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)


def _completed(verification_id: str, version: int) -> dict[str, Any]:
    return {
        "id": verification_id,
        "status": "completed",
        "report_version": version,
        "reason": None,
        "members_cipher": f"cipher-{version}",
        "claimed_until": None,
        "finished_at": NOW,
        "refetch_at": NOW + timedelta(hours=version),
        "refetch_interval_seconds": 3600.0 * version,
    }


def _items(member_id: str, vehicle: str = "unavailable") -> list[dict[str, Any]]:
    """A report's items as its body holds them."""
    return [
        {
            "member_id": member_id,
            "department": "tax",
            "status": "ok",
            "source": "tax:http",
            "as_of": "2026-11-30",
            "findings": {
                "incomes": [{"kind": "wages", "monthly_fen": 123_400}],
                "assets": [],
                "flags": ["有车"],
                "facts": {},
                "amounts": {},
            },
            "reason": None,
            "request_hash": "h" * 64,
        },
        {
            "member_id": member_id,
            "department": "vehicle",
            "status": vehicle,
            "source": "vehicle:http",
            "as_of": None,
            "findings": None,
            "reason": "超时" if vehicle == "unavailable" else None,
            "request_hash": None,
        },
    ]


def _rows(verification_id: str, household_id: str, version: int) -> dict[str, Any]:
    """One report's rows, as the worker makes them: its body has an item with findings, one
    without."""
    return {
        "queries": [
            {
                "person_index": f"p{version}",
                "verification_id": verification_id,
                "member_id": f"m{version}",
                "department": "tax",
                "consent_id": "c1",
                "purpose": "申请",
                "requested_by": "test-client",
                "outcome": "found",
                "request_hash": "h" * 64,
                "response_digest": None,
                "queried_at": NOW,
                "answer_cipher": f"raw-{version}",
                "purge_after": NOW + timedelta(days=30),
            }
        ],
        "reports": [
            {
                "verification_id": verification_id,
                "version": version,
                "household_id": household_id,
                "content_hash": str(version) * 64,
                "body": {"版本": version, "report": {"items": _items(f"m{version}")}},
                "created_at": NOW,
            }
        ],
        "completed": [_completed(verification_id, version)],
    }


def _event(verification_id: str, version: int) -> CloudEvent:
    return CloudEvent(
        id=f"{verification_id[:30]}-e{version}",
        source="/bangfu/verification",
        type="cn.bangfu.verification.verification.completed.v1",
        subject=verification_id,
        time=NOW,
        dataschema="https://example.org/schema.json",
        region="411302",
        sequence=version,
        data={"report_version": version},
    )


async def _write(
    db: Database, *reports: dict[str, Any], watched: list[dict[str, Any]], feed: dict[str, Any]
) -> None:
    async with db.unit_of_work(one_write=True) as uow:
        await store.write_reports(
            uow.session,
            **{k: [r for rows in reports for r in rows[k]] for k in reports[0]},
            watched=watched,
            feed_indexes=feed,
            events=[
                _event(rows["completed"][0]["id"], rows["completed"][0]["report_version"])
                for rows in reports
            ],
            audit_entries=[
                audit.AuditEntry(
                    client_id="test-client",
                    action="verification.report",
                    target=rows["completed"][0]["id"],
                    outcome="success",
                    at=NOW,
                    purpose="申请",
                    detail={"report_version": rows["completed"][0]["report_version"]},
                )
                for rows in reports
            ],
            profile="intl",
        )
        await uow.commit()


async def _filed(db: Database, *household_ids: str) -> list[str]:
    """A queued verification of each household, as a request files it; their ids."""
    ids = []
    async with db.unit_of_work() as uow:
        for household_id in household_ids:
            row = _queued_row(household_id)
            await store.insert_verification(uow.session, row)
            ids.append(row["id"])
        await uow.commit()
    return ids


async def _all(db: Database, table: Any, *order: Any) -> list[dict[str, Any]]:
    async with db.unit_of_work() as uow:
        found = await uow.session.execute(select(table).order_by(*order))
        return [dict(r) for r in found.mappings()]


async def test_reports_are_written_with_every_row_and_the_household_followed_anew(
    migrated_database: Callable[[str], Awaitable[tuple[str, str | None]]],
) -> None:
    url, schema = await migrated_database("verification")
    db = Database(url, schema=schema)
    moved, other = await _filed(db, "h-moved", "h-other")
    try:
        await _write(
            db,
            _rows(moved, "h-moved", 1),
            watched=[{"household_id": "h-moved", "region": "411302", "last_verified_at": NOW}],
            feed={"h-moved": ["f-a", "f-b", "f-a"]},
        )
        async with db.unit_of_work() as uow:
            await store.watch_household(uow.session, "h-moved", region="411302", enrolled=True)
            await uow.commit()
        later = NOW + timedelta(days=1)
        # Two reports in one write: the moved household's second, another household's first.
        await _write(
            db,
            _rows(moved, "h-moved", 2),
            _rows(other, "h-other", 1),
            watched=[
                {"household_id": "h-moved", "region": "411303", "last_verified_at": later},
                {"household_id": "h-other", "region": "411302", "last_verified_at": later},
            ],
            feed={"h-moved": ["f-b", "f-c"], "h-other": ["f-a"]},
        )

        queries = await _all(db, store.department_query, "id")
        assert [(q["person_index"], q["verification_id"], q["answer_cipher"]) for q in queries] == [
            ("p1", moved, "raw-1"),
            ("p2", moved, "raw-2"),
            ("p1", other, "raw-1"),
        ]
        assert as_utc(queries[0]["purge_after"]) == NOW + timedelta(days=30)
        reports = await _all(db, store.report, "verification_id", "version")
        assert [(r["verification_id"], r["version"], r["body"]) for r in reports] == sorted(
            [
                (moved, 1, {"版本": 1, "report": {"items": _items("m1")}}),
                (moved, 2, {"版本": 2, "report": {"items": _items("m2")}}),
                (other, 1, {"版本": 1, "report": {"items": _items("m1")}}),
            ],
            key=lambda r: (r[0], r[1]),
        )

        verifications = {v["id"]: v for v in await _all(db, store.verification, "id")}
        for verification_id, version in ((moved, 2), (other, 1)):
            written = verifications[verification_id]
            expected = _completed(verification_id, version)
            assert {c: written[c] for c in ("status", "report_version", "members_cipher")} == {
                c: expected[c] for c in ("status", "report_version", "members_cipher")
            }
            assert as_utc(written["refetch_at"]) == expected["refetch_at"]
            assert written["refetch_interval_seconds"] == expected["refetch_interval_seconds"]
            assert (written["reason"], written["claimed_until"]) == (None, None)

        watched = {w["household_id"]: w for w in await _all(db, store.watched_household)}
        assert watched["h-moved"]["region"] == "411303"  # verified in its new region
        assert watched["h-moved"]["enrolled"] is True  # enrolment is not the write's to undo
        assert as_utc(watched["h-moved"]["last_verified_at"]) == later
        assert (watched["h-other"]["region"], watched["h-other"]["enrolled"]) == ("411302", False)
        followed = await _all(db, store.watched_person, "household_id", "feed_index")
        assert [(p["household_id"], p["feed_index"]) for p in followed] == [
            ("h-moved", "f-b"),
            ("h-moved", "f-c"),
            ("h-other", "f-a"),
        ]

        events = await _all(db, outbox, "position")
        assert [(e["aggregate"], CloudEvent.from_json(e["body"]).sequence) for e in events] == [
            (moved, 1),
            (moved, 2),
            (other, 1),
        ]
        assert all(e["sent_at"] is None for e in events)

        records = await _all(db, audit.audit_log, "seq")
        assert [(r["target"], r["detail"]["report_version"]) for r in records] == [
            (moved, 1),
            (moved, 2),
            (other, 1),
        ]
        async with db.unit_of_work() as uow:
            assert await audit.verify(uow.session) == []  # chained, each to the one before
    finally:
        await db.dispose()


async def test_the_items_to_ask_again_are_the_latest_reports(
    migrated_database: Callable[[str], Awaitable[tuple[str, str | None]]],
) -> None:
    url, schema = await migrated_database("verification")
    db = Database(url, schema=schema)
    verification_id, unreported = await _filed(db, "h-1", "h-2")
    watched = [{"household_id": "h-1", "region": "411302", "last_verified_at": NOW}]
    try:
        await _write(db, _rows(verification_id, "h-1", 1), watched=watched, feed={"h-1": ["f-a"]})
        # Version 2 asked member m1's vehicle again, which answered this time.
        again = _rows(verification_id, "h-1", 2)
        again["reports"][0]["body"]["report"]["items"] = _items("m1", vehicle="ok")
        await _write(db, again, watched=watched, feed={"h-1": ["f-a"]})

        async with db.unit_of_work() as uow:
            items = await store.latest_items(uow.session, verification_id)
            assert await store.latest_items(uow.session, unreported) == []
        assert [(i["member_id"], i["department"], i["status"]) for i in items] == [
            ("m1", "tax", "ok"),
            ("m1", "vehicle", "ok"),
        ]
        assert items[0]["as_of"] == "2026-11-30"
        assert items[1]["reason"] is None
    finally:
        await db.dispose()


async def test_a_reports_body_keeps_the_hashed_text_as_written(
    migrated_database: Callable[[str], Awaitable[tuple[str, str | None]]],
) -> None:
    """The body embeds the report's canonical JSON, the text its hash was taken of
    (`worker.report_body`); the database keeps it byte for byte, where PostgreSQL's JSONB
    would rewrite it (spaces, key order, numbers)."""
    url, schema = await migrated_database("verification")
    db = Database(url, schema=schema)
    (verification_id,) = await _filed(db, "h-1")
    canonical = b'{"items":[{"a":null,"b":1.5}],"total_fen":10000000000000000,"z":"\xe7\x89\x88"}'
    rows = _rows(verification_id, "h-1", 1)
    rows["reports"][0]["body"] = {"report": orjson.Fragment(canonical), "version": 1}
    watched = [{"household_id": "h-1", "region": "411302", "last_verified_at": NOW}]
    try:
        await _write(db, rows, watched=watched, feed={"h-1": ["f-a"]})
        async with db.unit_of_work() as uow:
            stored = (await uow.session.execute(select(cast(store.report.c.body, Text)))).scalar()
        assert stored is not None
        assert canonical.decode() in stored
        assert orjson.loads(stored)["report"] == orjson.loads(canonical)
    finally:
        await db.dispose()


async def test_a_claim_takes_the_abandoned_then_the_oldest_due_and_reads_only_what_it_takes(
    migrated_database: Callable[[str], Awaitable[tuple[str, str | None]]],
    uses_sqlite: bool,
) -> None:
    url, schema = await migrated_database("verification")
    db = Database(url, schema=schema)
    now = datetime.now(UTC)
    # A batch of 2,000 queued and due: a claim that read them all was O(batch) each.
    batch = [
        {**_queued_row(f"h-batch-{i}"), "not_before": now - timedelta(seconds=30)}
        for i in range(2_000)
    ]
    late, early, not_due, abandoned, alive = await _filed(db, *(f"h-{n}" for n in range(5)))
    try:
        async with db.unit_of_work() as uow:
            await store.insert_rows(uow.session, store.verification, batch)
            v = store.verification.c
            for verification_id, values in (
                (late, {"not_before": now - timedelta(minutes=1)}),
                (early, {"not_before": now - timedelta(minutes=2)}),
                (not_due, {"not_before": now + timedelta(minutes=5)}),
                (abandoned, {"status": "running", "claimed_until": now - timedelta(seconds=1)}),
                (alive, {"status": "running", "claimed_until": now + timedelta(minutes=5)}),
            ):
                await uow.session.execute(
                    store.verification.update().where(v.id == verification_id).values(**values)
                )
            if not uses_sqlite:
                await uow.session.execute(text("ANALYZE verification"))
            await uow.commit()

        async with db.unit_of_work() as uow:
            first = await store.claim_queued(uow.session, limit=2, lease_seconds=30)
            if not uses_sqlite:
                read = (
                    await uow.session.execute(
                        text(
                            "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)"
                            " FROM pg_stat_xact_user_tables"
                            " WHERE relname = 'verification' AND schemaname = current_schema()"
                        )
                    )
                ).scalar_one()
                assert read <= 10, f"a claim of 2 read {read} rows"
            await uow.commit()
        async with db.unit_of_work() as uow:
            second = await store.claim_queued(uow.session, limit=5, lease_seconds=30)
            await uow.commit()

        assert {r["id"] for r in first} == {abandoned, early}
        assert sorted(r["household_id"][:8] for r in second) == ["h-0"] + ["h-batch-"] * 4
        assert {r["status"] for r in first + second} == {"running"}
        assert {r["attempts"] for r in first + second} == {1}
        assert all(as_utc(r["claimed_until"]) > now for r in first + second)
        untouched = {r["id"]: r for r in await _all(db, store.verification)}
        assert untouched[not_due]["status"] == "queued"  # not yet due
        assert as_utc(untouched[alive]["claimed_until"]) > now + timedelta(minutes=4)  # its lease
    finally:
        await db.dispose()


def _queued_row(household_id: str) -> dict[str, Any]:
    """A queued verification's row, as a request files it."""
    row, _ = _queued(
        household_id=household_id,
        region="411302",
        purpose="申请",
        departments=[Department.TAX, Department.VEHICLE],
        trigger="api",
        requested_by="test-client",
    )
    return row
