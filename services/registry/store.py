"""All of the registry's SQL."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Column, DateTime, Integer, String, Table, Text, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import new_metadata

metadata = new_metadata()

household = Table(
    "household",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("region", String(6), nullable=False, index=True),
    Column("status", String(32), nullable=False),
    Column("version", Integer, nullable=False),
    Column("head_name", String(50), nullable=False),
    Column("head_identity_cipher", Text, nullable=False),
    Column("head_identity_index", String(128), nullable=False, index=True),
    Column("head_identity_masked", String(18), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


async def insert_household(session: AsyncSession, row: dict[str, object]) -> None:
    """Insert a household row (timestamps added here)."""
    now = datetime.now(UTC)
    await session.execute(insert(household).values(**row, created_at=now, updated_at=now))


async def get_household(session: AsyncSession, household_id: str) -> dict[str, object] | None:
    result = await session.execute(select(household).where(household.c.id == household_id))
    row = result.mappings().one_or_none()
    return dict(row) if row else None


async def find_by_identity_index(session: AsyncSession, index: str) -> str | None:
    """The id of a household headed by the person with this blind index, if any."""
    result = await session.execute(
        select(household.c.id).where(household.c.head_identity_index == index).limit(1)
    )
    return result.scalar_one_or_none()
