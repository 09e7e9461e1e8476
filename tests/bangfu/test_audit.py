"""`bangfu audit verify`: the chain against its checkpoint, on the service's real database."""

from __future__ import annotations

import asyncio
import datetime
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy import delete
from typer.testing import CliRunner, Result

from bangfu.cli import app
from services.registry.settings import RegistrySettings
from shared import audit
from shared.db import Database

T0 = datetime.datetime(2026, 11, 1, 8, 0, tzinfo=datetime.UTC)


@pytest.fixture
async def registry_database(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    migrated_database: Callable[[str], Awaitable[tuple[str, str | None]]],
) -> Database:
    """The registry's migrated database, and the environment `bangfu` reads it from."""
    for name in list(os.environ):
        if name.startswith("BANGFU_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("BANGFU_HOME", str(tmp_path / "home"))
    url, schema = await migrated_database("registry")
    monkeypatch.setenv("BANGFU_REGISTRY_DATABASE_URL", url)
    if schema:
        monkeypatch.setenv("BANGFU_REGISTRY_DATABASE_SCHEMA", schema)
    monkeypatch.setenv("BANGFU_REGISTRY_AUDIT_CHECKPOINT_FILE", str(tmp_path / "anchor.json"))
    return Database(url, schema=schema)


async def append(db: Database, count: int) -> None:
    async with db.unit_of_work() as uow:
        for i in range(count):
            await audit.append(
                uow.session,
                client_id="dept-minzheng",
                action="household.read_unmasked",
                target=f"household/{i}",
                outcome="success",
                purpose="复核",
                now=T0 + datetime.timedelta(minutes=i),
            )
        await uow.commit()


async def checkpoint(db: Database) -> None:
    """What a running service does every few seconds."""
    settings = RegistrySettings()
    async with db.sessionmaker() as session:
        head = await audit.head_checkpoint(session, now=T0)
    key = settings.audit_checkpoint_key.get_secret_value().encode()
    audit.write_checkpoint(settings.audit_checkpoint_path, head, key=key)


async def bangfu(*args: str) -> Result:
    # In a thread: the command runs its own event loop.
    return await asyncio.to_thread(CliRunner().invoke, app, list(args))


class TestAuditVerify:
    async def test_an_untouched_chain_is_valid_up_to_its_checkpoint(
        self, registry_database: Database
    ) -> None:
        await append(registry_database, 12)
        await checkpoint(registry_database)

        result = await bangfu("audit", "verify", "registry")

        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == (
            "registry: valid, 12 records up to seq 12; checkpoint at seq 12 "
            "(2026-11-01T08:00:00.000000Z) found"
        )
        await registry_database.dispose()

    async def test_the_newest_rows_deleted_in_the_database_are_named(
        self, registry_database: Database
    ) -> None:
        await append(registry_database, 12)
        await checkpoint(registry_database)
        async with registry_database.unit_of_work() as uow:
            await uow.session.execute(delete(audit.audit_log).where(audit.audit_log.c.seq > 10))
            await uow.commit()

        result = await bangfu("audit", "verify", "registry")

        assert result.exit_code == 1
        assert result.stdout.splitlines() == [
            "registry: INVALID, 10 records up to seq 10; checkpoint at seq 12 "
            "(2026-11-01T08:00:00.000000Z)",
            "  seq 11 deleted: records 11 to 12 are missing: the checkpoint of "
            "2026-11-01T08:00:00.000000Z saw the chain reach 12",
        ]
        await registry_database.dispose()

    async def test_a_missing_checkpoint_fails_the_check(self, registry_database: Database) -> None:
        await append(registry_database, 3)

        result = await bangfu("audit", "verify", "registry")

        assert result.exit_code == 1
        assert "no checkpoint" in result.stdout
        await registry_database.dispose()

    async def test_a_forged_checkpoint_fails_the_check(
        self, registry_database: Database, tmp_path: Path
    ) -> None:
        await append(registry_database, 3)
        await checkpoint(registry_database)
        anchor = tmp_path / "anchor.json"
        anchor.write_text(anchor.read_text().replace('"seq":3', '"seq":2'))

        result = await bangfu("audit", "verify", "registry")

        assert result.exit_code == 1
        assert "the signature does not verify" in result.stdout
        await registry_database.dispose()
