"""The verification service's data migrations, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from sqlalchemy import insert, select

from services.verification import store
from shared.db import Database, as_utc
from shared.identity import mask_identity_number
from shared.migrations import alembic_config, upgrade
from tests.conftest import _database
from tests.helpers import identity_number, table_names


def former_mask(number: str) -> str:
    """The mask before issue 11: the first 6 and the last 4 characters (the sequence too)."""
    return number[:6] + "*" * 8 + number[-4:]


async def test_stored_masks_keep_only_the_region_and_the_check_character(
    tmp_path: Path,
) -> None:
    number = identity_number(serial=601)
    now = datetime.now(UTC)
    async with _database("verification", tmp_path) as (url, schema):
        await asyncio.to_thread(
            upgrade, "verification", url=url, schema=schema, revision="verification_0004"
        )
        db = Database(url, schema=schema)
        async with db.unit_of_work() as uow:
            await uow.session.execute(
                insert(store.consent).values(
                    id="c-1",
                    person_index="p",
                    identity_masked=former_mask(number),
                    region="411302",
                    signed_by="张三明",
                    signed_on=date(2026, 1, 1),
                    expires_on=date(2026, 12, 31),
                    departments=["tax"],
                    document_ref="宛城-1",
                    recorded_by="test",
                    recorded_at=now,
                )
            )
            await uow.session.execute(
                insert(store.report).values(
                    verification_id="v-1",
                    version=1,
                    household_id="h-1",
                    content_hash="0" * 64,
                    body={
                        "members": [{"member_id": "m0", "identity_number": former_mask(number)}],
                        "report": {"version": 1},
                    },
                    created_at=now,
                )
            )
            await uow.commit()
        await db.dispose()

        await asyncio.to_thread(upgrade, "verification", url=url, schema=schema)

        db = Database(url, schema=schema)
        async with db.sessionmaker() as session:
            masked = (await session.execute(select(store.consent.c.identity_masked))).scalar()
            body = (await session.execute(select(store.report.c.body))).scalar()
        await db.dispose()

    assert masked == mask_identity_number(number)
    assert body == {
        "members": [{"member_id": "m0", "identity_number": mask_identity_number(number)}],
        "report": {"version": 1},
    }


async def test_the_items_table_goes_and_comes_back_from_the_latest_reports(
    tmp_path: Path,
) -> None:
    """verification_0010 drops the items, which every report's body holds; its downgrade makes
    them again from each verification's latest report, with the consent and the response's
    digest of the question the query log has under the item's request hash."""
    now = datetime.now(UTC)
    asked = {"request_hash": "t" * 64, "status": "ok", "source": "tax:http", "reason": None}
    tax = {**asked, "member_id": "m1", "department": "tax", "as_of": "2026-11-30"}
    tax["findings"] = {"incomes": [], "assets": [], "flags": [], "facts": {}, "amounts": {}}
    vehicle = {"member_id": "m1", "department": "vehicle", "status": "unavailable"}
    vehicle |= {"source": "vehicle:http", "as_of": None, "findings": None, "reason": "超时"}
    vehicle["request_hash"] = None
    async with _database("verification", tmp_path) as (url, schema):
        await asyncio.to_thread(upgrade, "verification", url=url, schema=schema)
        db = Database(url, schema=schema)
        async with db.unit_of_work() as uow:
            for version, items in ((1, [vehicle]), (2, [tax, vehicle])):
                await uow.session.execute(
                    insert(store.report).values(
                        verification_id="v-1",
                        version=version,
                        household_id="h-1",
                        content_hash=str(version) * 64,
                        body={"report": {"version": version, "items": items}},
                        created_at=now,
                    )
                )
            await uow.session.execute(insert(store.department_query).values(_question("tax", now)))
            await uow.commit()
        await db.dispose()
        config = alembic_config("verification", url=url, schema=schema)

        await asyncio.to_thread(command.downgrade, config, "verification_0009")

        db = Database(url, schema=schema)
        items = sa.table("verification_item", *(_column(c) for c in _ITEM_COLUMNS))
        async with db.sessionmaker() as session:
            rows = (
                (await session.execute(sa.select(items).order_by(sa.text("department"))))
                .mappings()
                .all()
            )
        await db.dispose()
        await asyncio.to_thread(command.upgrade, config, "head")
        tables = await table_names(url, schema)

    assert [
        (r["member_id"], r["department"], r["status"], r["consent_id"], r["response_digest"])
        for r in rows
    ] == [("m1", "tax", "ok", "c-1", "d" * 64), ("m1", "vehicle", "unavailable", None, None)]
    assert (str(rows[0]["as_of"]), rows[1]["reason"]) == ("2026-11-30", "超时")
    assert "verification_item" not in tables and "report" in tables


_ITEM_COLUMNS = (
    "member_id",
    "department",
    "status",
    "as_of",
    "reason",
    "consent_id",
    "response_digest",
)


async def test_the_raw_answers_move_to_their_questions_rows_and_back(tmp_path: Path) -> None:
    """verification_0011 puts each raw answer on the query log's row of its exchange (same
    verification, department, request hash and time), drops the answers' table, and its
    downgrade makes the table again from the rows that still have an answer."""
    now = datetime.now(UTC)
    later = datetime(2027, 3, 1, tzinfo=UTC)
    query = sa.table("department_query", *(_column(c) for c in _QUERY_COLUMNS))
    raw = sa.table("raw_answer", *(_column(c) for c in _RAW_COLUMNS))

    async with _database("verification", tmp_path) as (url, schema):
        await asyncio.to_thread(
            upgrade, "verification", url=url, schema=schema, revision="verification_0010"
        )
        db = Database(url, schema=schema)
        async with db.unit_of_work() as uow:
            # Asked twice at tax (a failed run, then the one reported), once at vehicle.
            earlier = now - timedelta(minutes=5)
            for department, at in (("tax", earlier), ("tax", now), ("vehicle", now)):
                await uow.session.execute(insert(query).values(_question(department, at)))
            for department in ("tax", "vehicle"):
                await uow.session.execute(
                    insert(raw).values(
                        verification_id="v-1",
                        member_id="m1",
                        department=department,
                        request_hash=department[0] * 64,
                        cipher=f"cipher-{department}",
                        received_at=now,
                        purge_after=later,
                    )
                )
            await uow.commit()
        await db.dispose()

        await asyncio.to_thread(upgrade, "verification", url=url, schema=schema)
        db = Database(url, schema=schema)
        async with db.sessionmaker() as session:
            moved = (
                (await session.execute(select(store.department_query).order_by("id")))
                .mappings()
                .all()
            )
        await db.dispose()
        tables = await table_names(url, schema)
        config = alembic_config("verification", url=url, schema=schema)
        await asyncio.to_thread(command.downgrade, config, "verification_0010")
        db = Database(url, schema=schema)
        async with db.sessionmaker() as session:
            back = (await session.execute(sa.select(raw).order_by("department"))).all()
        await db.dispose()

    assert [(q["department"], q["member_id"], q["answer_cipher"]) for q in moved] == [
        ("tax", None, None),
        ("tax", "m1", "cipher-tax"),
        ("vehicle", "m1", "cipher-vehicle"),
    ]
    assert as_utc(moved[1]["purge_after"]) == later
    assert "raw_answer" not in tables
    assert [(r.department, r.member_id, r.cipher, as_utc(r.purge_after)) for r in back] == [
        ("tax", "m1", "cipher-tax", later),
        ("vehicle", "m1", "cipher-vehicle", later),
    ]


def _question(department: str, at: datetime) -> dict[str, object]:
    """A query log row of verification v-1, as the log had it before 0011."""
    return {
        "person_index": "p",
        "verification_id": "v-1",
        "department": department,
        "consent_id": "c-1",
        "purpose": "申请",
        "requested_by": "test",
        "outcome": "ok",
        "request_hash": department[0] * 64,
        "response_digest": "d" * 64,
        "queried_at": at,
    }


def _column(name: str) -> sa.ColumnClause[object]:
    """A column as the migration's table has it: a time is written as SQLAlchemy writes it."""
    at = name in ("queried_at", "received_at", "purge_after")
    return sa.column(name, sa.DateTime(timezone=True)) if at else sa.column(name)


_QUERY_COLUMNS = (
    "person_index",
    "verification_id",
    "department",
    "consent_id",
    "purpose",
    "requested_by",
    "outcome",
    "request_hash",
    "response_digest",
    "queried_at",
)
_RAW_COLUMNS = (
    "verification_id",
    "member_id",
    "department",
    "request_hash",
    "cipher",
    "received_at",
    "purge_after",
)
