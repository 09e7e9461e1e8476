"""shared.db: the region confinement rule in SQL, on the test database (SQLite or PostgreSQL),
and SQLite's one writer surviving cancelled units of work."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Column, MetaData, String, Table, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import Database, create_engine, region_condition
from shared.regions import region_in
from tests.conftest import POSTGRES_URL

CODES = ["411302", "411303", "411400", "420102", "110101"]
PREFIX_SETS = [[], ["41"], ["4113"], ["411302"], ["4113", "42"], ["11", "41", "42"], ["43"]]

metadata = MetaData()
place = Table("place", metadata, Column("region", String(6), primary_key=True))


@pytest.fixture
async def engine(tmp_path: object) -> AsyncIterator[AsyncEngine]:
    if POSTGRES_URL:
        schema = "test_db_region_condition"
        engine = create_engine(POSTGRES_URL, schema=schema)
        async with engine.begin() as connection:
            await connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
            await connection.execute(text(f"CREATE SCHEMA {schema}"))
    else:
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/regions.db")
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
        await connection.execute(insert(place), [{"region": code} for code in CODES])
    yield engine
    if POSTGRES_URL:
        async with engine.begin() as connection:
            await connection.execute(text("DROP SCHEMA IF EXISTS test_db_region_condition CASCADE"))
    await engine.dispose()


class TestRegionCondition:
    async def test_no_prefixes_select_nothing(self, engine: AsyncEngine) -> None:
        async with engine.connect() as connection:
            rows = (
                await connection.execute(select(place).where(region_condition(place.c.region, [])))
            ).all()
        assert rows == []

    @pytest.mark.parametrize("prefixes", PREFIX_SETS, ids=lambda p: ",".join(p) or "none")
    async def test_sql_selects_exactly_what_region_in_admits(
        self, engine: AsyncEngine, prefixes: list[str]
    ) -> None:
        async with engine.connect() as connection:
            query = select(place.c.region).where(region_condition(place.c.region, prefixes))
            selected = sorted((await connection.execute(query)).scalars())
        assert selected == sorted(code for code in CODES if region_in(code, prefixes))


class TestCancelledWrites:
    async def test_a_write_after_cancelled_writers_does_not_wait_for_their_lock(
        self, tmp_path: Path
    ) -> None:
        # A writer cancelled inside a statement had its connection closed without a rollback;
        # sqlite3 kept that connection (its transaction, the write lock) until collected, and
        # the next write waited out the 30 s busy timeout (this test failed 3 runs of 3
        # without the fix).
        db = Database(f"sqlite+aiosqlite:///{tmp_path}/cancelled.db")
        async with db.engine.begin() as connection:
            await connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))

        async def writer() -> None:
            while True:
                async with db.unit_of_work() as uow:
                    await uow.session.execute(text("INSERT INTO t (v) VALUES ('w')"))
                    await uow.session.execute(text("SELECT count(*) FROM t"))
                    await uow.commit()

        try:
            for round_ in range(30):
                writers = [asyncio.create_task(writer()) for _ in range(8)]
                await asyncio.sleep(0.05 + 0.007 * round_)  # cancelled at varying points
                for task in writers:
                    task.cancel()
                await asyncio.gather(*writers, return_exceptions=True)
                async with asyncio.timeout(10), db.unit_of_work() as uow:
                    await uow.session.execute(text("INSERT INTO t (v) VALUES ('after')"))
                    await uow.commit()
            async with db.unit_of_work() as uow:
                after = (
                    await uow.session.execute(text("SELECT count(*) FROM t WHERE v = 'after'"))
                ).scalar_one()
            assert after == 30
        finally:
            await db.dispose()
