"""A pytest plugin: a database with the common tables and an `effect` table for test handlers."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, String, Table, func, insert, select, text

from shared.db import Database, UnitOfWork, common_metadata, create_engine, new_metadata
from shared.events.envelope import CloudEvent, new_event

POSTGRES_URL = os.environ.get("BANGFU_TEST_DATABASE_URL")

test_metadata = new_metadata()
effect = Table(
    "effect",
    test_metadata,
    Column("position", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False),
    Column("aggregate", String(100), nullable=False),
    Column("sequence", Integer, nullable=False),
)


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    if POSTGRES_URL:
        schema = f"test_events_{uuid.uuid4().hex[:10]}"
        admin = create_engine(POSTGRES_URL)
        async with admin.begin() as connection:
            await connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        db = Database(POSTGRES_URL, schema=schema)
    else:
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'events.db'}")
    async with db.engine.begin() as connection:
        await connection.run_sync(common_metadata.create_all)
        await connection.run_sync(test_metadata.create_all)
    yield db
    await db.dispose()
    if POSTGRES_URL:
        async with admin.begin() as connection:
            await connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


def sample_event(aggregate: str, sequence: int, region: str = "411302") -> CloudEvent:
    return new_event(
        service="registry",
        aggregate="household",
        name="changed",
        subject=aggregate,
        region=region,
        sequence=sequence,
        data={"n": sequence},
    )


async def record_effect(event: CloudEvent, uow: UnitOfWork) -> None:
    """A handler whose effect a test can count."""
    await uow.session.execute(
        insert(effect).values(event_id=event.id, aggregate=event.subject, sequence=event.sequence)
    )


async def effects(db: Database) -> list[tuple[str, str, int]]:
    async with db.sessionmaker() as session:
        rows = await session.execute(
            select(effect.c.event_id, effect.c.aggregate, effect.c.sequence).order_by(
                effect.c.position
            )
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


async def effect_count(db: Database) -> int:
    async with db.sessionmaker() as session:
        return int((await session.execute(select(func.count()).select_from(effect))).scalar_one())
