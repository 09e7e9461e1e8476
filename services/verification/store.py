"""All of the verification service's SQL."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import JSON, Column, Date, DateTime, String, Table, Text, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import new_metadata

metadata = new_metadata()

consent = Table(
    "consent",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("person_index", String(128), nullable=False, index=True),
    Column("identity_masked", String(18), nullable=False),
    Column("region", String(6), nullable=False),
    Column("household_id", String(36)),
    Column("signed_by", String(50), nullable=False),
    Column("signed_on", Date, nullable=False),
    Column("expires_on", Date, nullable=False),
    Column("departments", JSON, nullable=False),
    Column("document_ref", String(100), nullable=False),
    Column("revoked_on", Date),
    Column("revoked_reason", Text),
    Column("recorded_by", String(200), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
)


async def insert_consent(session: AsyncSession, row: dict[str, Any]) -> None:
    await session.execute(insert(consent).values(**row, recorded_at=datetime.now(UTC)))


async def get_consent(session: AsyncSession, consent_id: str) -> dict[str, Any] | None:
    row = (
        (await session.execute(select(consent).where(consent.c.id == consent_id)))
        .mappings()
        .one_or_none()
    )
    return dict(row) if row else None


async def consents_of(session: AsyncSession, person_indexes: Sequence[str]) -> list[dict[str, Any]]:
    rows = await session.execute(
        select(consent)
        .where(consent.c.person_index.in_(person_indexes))
        .order_by(consent.c.signed_on, consent.c.id)
    )
    return [dict(r) for r in rows.mappings()]


async def revoke_consent(session: AsyncSession, consent_id: str, *, on: date, reason: str) -> None:
    await session.execute(
        update(consent)
        .where(consent.c.id == consent_id)
        .values(revoked_on=on, revoked_reason=reason)
    )
