"""Replicas never migrate: `/readyz` says not-ready until the migration job brought the schema."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy import text

from services.registry.app import create_app
from services.registry.settings import RegistrySettings
from shared.db import create_engine
from shared.migrations import upgrade
from shared.settings import SuiteSettings
from tests.conftest import POSTGRES_URL, running


@contextlib.asynccontextmanager
async def empty_database(tmp_path: Path) -> AsyncIterator[tuple[str, str | None]]:
    if not POSTGRES_URL:
        yield f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}", None
        return
    schema = f"test_unmigrated_{tmp_path.name[-10:].lower()}"
    engine = create_engine(POSTGRES_URL)
    async with engine.begin() as connection:
        await connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    try:
        yield POSTGRES_URL, schema
    finally:
        async with engine.begin() as connection:
            await connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        await engine.dispose()


async def test_not_ready_until_the_schema_is_at_head(tmp_path: Path, suite: SuiteSettings) -> None:
    async with empty_database(tmp_path) as (url, schema):
        settings = RegistrySettings(suite=suite, database_url=url, database_schema=schema)
        async with running(create_app(settings)) as client:
            before = await client.get("/readyz")
            assert before.status_code == 503
            assert before.json()["checks"]["schema"] == "not at head: run `bangfu migrate`"
            assert (await client.get("/healthz")).status_code == 200  # alive, only not ready

            await asyncio.to_thread(upgrade, "registry", url=url, schema=schema)

            after = await client.get("/readyz")
            assert after.status_code == 200, after.text
            assert after.json()["checks"] == {
                "database": "ok",
                "schema": "ok",
                "nats": "ok",
                "consumer registry-dci-notify": "ok",
                "consumer registry-entitlements-determined": "ok",
                "consumer registry-exit-eligible": "ok",
                "consumer registry-verification-completed": "ok",
            }
