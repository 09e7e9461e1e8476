"""Alembic, run per service: one migration folder each, the common tables created by each."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import command, context, op
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection

from shared import audit, idempotency  # noqa: F401 - their tables join common_metadata
from shared.db import Database, common_metadata, create_engine
from shared.events import consumer, outbox  # noqa: F401 - likewise

SERVICES = ("registry", "verification", "benefits", "notifications")
# What `bangfu migrate` brings to head: the services, and the console's sessions table.
MIGRATED = (*SERVICES, "console")


def alembic_config(service: str, *, url: str, schema: str | None = None) -> Config:
    """The service's Alembic configuration, pointing at its own migration folder."""
    config = Config()
    package = importlib.import_module(f"services.{service}")
    config.set_main_option(
        "script_location", str(Path(str(package.__file__)).parent / "migrations")
    )
    config.set_main_option("file_template", "%%(year)d_%%(month).2d_%%(day).2d_%%(rev)s_%%(slug)s")
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["schema"] = schema
    return config


def upgrade(service: str, *, url: str, schema: str | None = None, revision: str = "head") -> None:
    """Bring the service's database to `revision` (blocking; call it off the event loop)."""
    command.upgrade(alembic_config(service, url=url, schema=schema), revision)


def head_revision(service: str) -> str | None:
    script = ScriptDirectory.from_config(alembic_config(service, url="sqlite://"))
    return script.get_current_head()


async def schema_at_head(db: Database, service: str) -> bool:
    """True when the database's Alembic revision is the service's newest migration."""
    async with db.engine.connect() as connection:
        try:
            current = (
                await connection.execute(text("SELECT version_num FROM alembic_version"))
            ).scalar_one_or_none()
        except sa.exc.DBAPIError:
            return False
    return current is not None and current == head_revision(service)


def run_env(service_metadata: MetaData) -> None:
    """The body of every service's `migrations/env.py`."""
    config = context.config
    url = config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url is not set"
    target: Sequence[MetaData] = [common_metadata, service_metadata]
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=target, literal_binds=True, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    asyncio.run(_run_online(url, config.attributes.get("schema"), target))


async def _run_online(url: str, schema: str | None, target: Sequence[MetaData]) -> None:
    engine = create_engine(url, schema=schema, pool_size=1)
    if schema:
        async with engine.begin() as connection:
            await connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    async with engine.connect() as connection:
        await connection.run_sync(_migrate, target)
        await connection.commit()
    await engine.dispose()


def _migrate(connection: Connection, target: Sequence[MetaData]) -> None:
    context.configure(
        connection=connection, target_metadata=target, render_as_batch=True, compare_type=True
    )
    with context.begin_transaction():
        context.run_migrations()


def _big_id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def create_common_tables() -> None:
    """DDL of the common tables as of 2026-11 (outbox, inbox, audit, idempotency keys).

    A snapshot on purpose: a later change to these tables comes as a new shared step that each
    service's next migration calls, so old databases and new ones end up the same.
    """
    op.create_table(
        "outbox",
        sa.Column("position", _big_id(), primary_key=True),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("aggregate", sa.String(100), nullable=False),
        sa.Column("nats_subject", sa.String(255), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("traceparent", sa.String(55)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("position", name="pk_outbox"),
        sa.UniqueConstraint("event_id", name="uq_outbox_event_id"),
    )
    op.create_index(
        "ix_outbox_unsent",
        "outbox",
        ["position"],
        postgresql_where=sa.text("sent_at IS NULL"),
        sqlite_where=sa.text("sent_at IS NULL"),
    )
    op.create_index("ix_outbox_aggregate_position", "outbox", ["aggregate", "position"])
    op.create_table(
        "inbox",
        sa.Column("consumer", sa.String(100), nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "event_id", name="pk_inbox"),
    )
    _create_audit_tables()
    op.create_table(
        "idempotency_key",
        sa.Column("client_id", sa.String(200), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("client_id", "key", name="pk_idempotency_key"),
    )


def create_audit_append() -> None:
    """PostgreSQL: the audit log's append function (2026-12), `shared.audit.APPEND_FUNCTION`.
    Its CREATE OR REPLACE keeps it in step: a later change to it is a migration calling this
    again."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(audit.APPEND_FUNCTION)


def drop_audit_append() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(audit.DROP_APPEND_FUNCTION)


def create_audit_append_or_fail() -> None:
    """PostgreSQL: the append that fails its statement if the head moved (2026-12),
    `shared.audit.APPEND_OR_FAIL_FUNCTION`."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(audit.APPEND_OR_FAIL_FUNCTION)


def drop_audit_append_or_fail() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(audit.DROP_APPEND_OR_FAIL_FUNCTION)


def drop_common_tables() -> None:
    for table in ("idempotency_key", "audit_anchor", "audit_log", "inbox", "outbox"):
        op.drop_table(table)


def _create_audit_tables() -> None:
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("client_id", sa.String(200), nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("purpose", sa.String(500)),
        sa.Column("trace_id", sa.String(64)),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.String(128), nullable=False),
        sa.Column("hash", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_table(
        "audit_anchor",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(128), nullable=False),
        sa.Column("purged_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_anchor"),
    )
