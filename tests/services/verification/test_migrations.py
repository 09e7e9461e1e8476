"""The verification service's data migrations, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from sqlalchemy import insert, select

from services.verification import store
from shared.db import Database
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
    asked = {"request_hash": "h" * 64, "status": "ok", "source": "tax:http", "reason": None}
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
            await uow.session.execute(
                insert(store.department_query).values(
                    person_index="p",
                    verification_id="v-1",
                    department="tax",
                    consent_id="c-1",
                    purpose="申请",
                    requested_by="test",
                    outcome="ok",
                    request_hash="h" * 64,
                    response_digest="d" * 64,
                    queried_at=now,
                )
            )
            await uow.commit()
        await db.dispose()
        config = alembic_config("verification", url=url, schema=schema)

        await asyncio.to_thread(command.downgrade, config, "verification_0009")

        db = Database(url, schema=schema)
        items = sa.table(*(["verification_item"] + [sa.column(c) for c in _ITEM_COLUMNS]))
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
