"""The verification service's data migrations, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from pathlib import Path

from sqlalchemy import insert, select

from services.verification import store
from shared.db import Database
from shared.identity import mask_identity_number
from shared.migrations import upgrade
from tests.conftest import _database
from tests.helpers import identity_number


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
