"""Each service's real Alembic migrations, on SQLite or PostgreSQL (BANGFU_TEST_DATABASE_URL)."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection

from shared.db import Database, common_metadata, create_engine
from shared.migrations import SERVICES, alembic_config, head_revision, schema_at_head
from tests.helpers import table_names

MigratedDatabase = Callable[[str], Awaitable[tuple[str, str | None]]]
# The tables that must be there whatever else the metadata grows (shared.migrations imports the
# modules that add the common tables to `common_metadata`).
REQUIRED_TABLES: dict[str, set[str]] = {
    "registry": {"outbox", "inbox", "audit_log", "audit_anchor", "household"},
    "verification": {"outbox", "inbox", "audit_log", "audit_anchor"},
    "benefits": {"outbox", "inbox", "audit_log", "audit_anchor"},
    "notifications": {"outbox", "inbox", "audit_log", "audit_anchor"},
}


def service_metadata(service: str) -> MetaData:
    metadata: MetaData = importlib.import_module(f"services.{service}.store").metadata
    return metadata


async def schema_diff(url: str, schema: str | None, service: str) -> list[Any]:
    """What autogenerate would change to bring the migrated schema to the metadata."""
    target = [common_metadata, service_metadata(service)]

    def compare(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        # Typed as one MetaData, but like target_metadata it takes a sequence of them.
        return list(compare_metadata(context, target))  # type: ignore[arg-type]

    engine = create_engine(url, schema=schema)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(compare)
    finally:
        await engine.dispose()


def _predicate(clause: Any, dialect: sa.Dialect) -> str:
    """An index predicate as comparable text: `(sent_at IS NULL)` -> `sent_atisnull`."""
    if not isinstance(clause, str):
        clause = str(clause.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    return "".join(ch for ch in clause.lower() if ch not in " ()\"'")


async def partial_indexes(
    url: str, schema: str | None, service: str
) -> dict[str, tuple[str, str | None]]:
    """Each index the metadata declares partial: (declared, migrated) predicate; None is full."""
    tables = [*common_metadata.tables.values(), *service_metadata(service).tables.values()]

    def reflect(connection: Connection) -> dict[str, tuple[str, str | None]]:
        dialect = connection.dialect
        inspector = sa.inspect(connection)
        found: dict[str, tuple[str, str | None]] = {}
        for table in tables:
            reflected = {i["name"]: i for i in inspector.get_indexes(table.name)}
            for index in table.indexes:
                declared = index.dialect_options[dialect.name].get("where")
                if declared is None:
                    continue
                where = reflected[str(index.name)]["dialect_options"].get(f"{dialect.name}_where")
                found[str(index.name)] = (
                    _predicate(declared, dialect),
                    None if where is None else _predicate(where, dialect),
                )
        return found

    engine = create_engine(url, schema=schema)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(reflect)
    finally:
        await engine.dispose()


async def at_head(url: str, schema: str | None, service: str) -> bool:
    db = Database(url, schema=schema)
    try:
        return await schema_at_head(db, service)
    finally:
        await db.dispose()


@pytest.mark.parametrize("service", SERVICES)
class TestMigrations:
    async def test_upgrading_to_head_creates_the_common_and_service_tables(
        self, service: str, migrated_database: MigratedDatabase
    ) -> None:
        url, schema = await migrated_database(service)
        declared = set(common_metadata.tables) | set(service_metadata(service).tables)

        tables = await table_names(url, schema)

        assert REQUIRED_TABLES[service] <= tables
        assert tables == declared | {"alembic_version"}

    async def test_the_migrated_database_is_at_the_services_head(
        self, service: str, migrated_database: MigratedDatabase
    ) -> None:
        url, schema = await migrated_database(service)

        assert head_revision(service) is not None
        assert await at_head(url, schema, service) is True

    async def test_downgrading_to_base_removes_the_tables(
        self, service: str, migrated_database: MigratedDatabase
    ) -> None:
        url, schema = await migrated_database(service)

        config = alembic_config(service, url=url, schema=schema)
        await asyncio.to_thread(command.downgrade, config, "base")

        assert await table_names(url, schema) == {"alembic_version"}
        assert await at_head(url, schema, service) is False

    async def test_the_migrated_schema_matches_the_metadata(
        self, service: str, migrated_database: MigratedDatabase
    ) -> None:
        url, schema = await migrated_database(service)

        assert await schema_diff(url, schema, service) == []

    async def test_partial_indexes_keep_their_predicate(
        self, service: str, migrated_database: MigratedDatabase
    ) -> None:
        # compare_metadata does not compare index predicates, so a partial index migrated as a
        # full one would pass the test above; this one reads the predicate back.
        url, schema = await migrated_database(service)

        found = await partial_indexes(url, schema, service)

        assert found["ix_outbox_unsent"] == ("sent_atisnull", "sent_atisnull")
        assert {name: migrated for name, (_, migrated) in found.items()} == {
            name: declared for name, (declared, _) in found.items()
        }


class TestSchemaAtHead:
    async def test_an_empty_database_is_not_at_head(self, tmp_path: Any) -> None:
        assert await at_head(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}", None, "registry") is (
            False
        )

    async def test_one_services_database_is_not_at_another_services_head(
        self, migrated_database: MigratedDatabase
    ) -> None:
        url, schema = await migrated_database("benefits")

        assert await at_head(url, schema, "registry") is False
