"""Session-wide real servers: a nats-server from the wheel, SQLite or PostgreSQL.

PostgreSQL is used when BANGFU_TEST_DATABASE_URL is set (CI sets it); each test then gets a
schema of its own, migrated by the service's real Alembic migrations.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import text

from services.registry.app import create_app as create_registry
from services.registry.settings import RegistrySettings
from shared.auth import issue_token
from shared.db import create_engine, is_sqlite
from shared.identity import check_character
from shared.migrations import upgrade
from shared.natsserver import NatsServer, free_port
from shared.settings import SuiteSettings

pytest_plugins = ["tests.eventkit"]

POSTGRES_URL = os.environ.get("BANGFU_TEST_DATABASE_URL")


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    store = tmp_path_factory.mktemp("nats")
    server = NatsServer(port=free_port(), store_dir=store, log_file=store / "nats.log")
    server.start()
    yield server
    server.stop()


_IDENTITY = re.compile(r"(?<![0-9A-Za-z])\d{17}[\dX](?![0-9A-Za-z])")
_PHONE = re.compile(r"(?<![0-9A-Za-z])1[3-9]\d{9}(?![0-9A-Za-z])")


def plaintext_pii(text: str) -> list[str]:
    """Valid 18-character identity numbers and 11-digit mobile numbers found in `text`."""
    numbers = [n for n in _IDENTITY.findall(text) if check_character(n[:17]) == n[17]]
    return numbers + _PHONE.findall(text)


@pytest.fixture(scope="session", autouse=True)
async def no_plaintext_pii_on_the_bus(nats_server: NatsServer) -> AsyncIterator[None]:
    """Every message on `bangfu.>` during the whole run is scanned: none may carry PII."""
    nc = await nats.connect(nats_server.url)
    seen: list[tuple[str, str]] = []

    async def scan(message: Any) -> None:
        if message.subject.startswith("bangfu.dept.") and message.subject.endswith(".query"):
            return  # a query to a department names its person: not an event, not broadcast
        found = plaintext_pii(message.data.decode(errors="replace"))
        if found:
            seen.append((message.subject, ", ".join(found)))

    await nc.subscribe("bangfu.>", cb=scan)
    yield
    await nc.drain()
    assert seen == [], f"plaintext identity or phone numbers on the bus: {seen[:5]}"


@pytest.fixture
async def nats_url(nats_server: NatsServer) -> AsyncIterator[str]:
    """The session's NATS, emptied of streams so that each test starts clean."""
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    for stream in await js.streams_info():
        await js.delete_stream(stream.config.name)
    await nc.close()
    yield nats_server.url


@pytest.fixture
def suite(tmp_path: Path, nats_url: str) -> SuiteSettings:
    """Suite settings for one test: its own home (keys) and the session's NATS."""
    return SuiteSettings(
        home=tmp_path / "home", nats_url=nats_url, log_json=True, rate_limit_per_second=0
    )


@contextlib.asynccontextmanager
async def _database(name: str, tmp_path: Path) -> AsyncIterator[tuple[str, str | None]]:
    if not POSTGRES_URL:
        yield f"sqlite+aiosqlite:///{tmp_path / (name + '.db')}", None
        return
    schema = f"test_{name}_{uuid.uuid4().hex[:10]}"
    yield POSTGRES_URL, schema
    await _drop_schema(POSTGRES_URL, schema)


async def _drop_schema(url: str, schema: str) -> None:
    """Drop a test's schema, ending first any session that still holds a lock in it.

    A connection left idle in a transaction by an app that did not stop (a uvicorn thread that
    outlived its join) would make DROP wait forever: a CI run hung there for 80 minutes.
    """
    engine = create_engine(url)
    async with engine.begin() as connection:
        await connection.execute(text("SET LOCAL lock_timeout = '30s'"))
        await connection.execute(
            text(
                "SELECT pg_terminate_backend(l.pid) FROM pg_locks l"
                " JOIN pg_class c ON c.oid = l.relation"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = :schema AND l.pid <> pg_backend_pid()"
                " GROUP BY l.pid"
            ),
            {"schema": schema},
        )
        await connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    await engine.dispose()


@pytest.fixture
async def migrated_database(
    tmp_path: Path,
) -> AsyncIterator[Callable[[str], Awaitable[tuple[str, str | None]]]]:
    """`await migrated_database("registry")` -> (url, schema) at the service's head revision."""
    stack = contextlib.AsyncExitStack()

    async def make(service: str) -> tuple[str, str | None]:
        url, schema = await stack.enter_async_context(_database(service, tmp_path))
        await asyncio.to_thread(upgrade, service, url=url, schema=schema)
        return url, schema

    async with stack:
        yield make


@pytest.fixture
def uses_sqlite() -> bool:
    return POSTGRES_URL is None or is_sqlite(POSTGRES_URL)


@contextlib.asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan and talk to it in-process over ASGI."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.fixture
def token(suite: SuiteSettings) -> Callable[..., str]:
    """`token("registry:write", regions=["4113"])` -> a bearer token the suite accepts."""
    from shared.auth import ensure_signing_key

    def make(
        *scopes: str,
        regions: list[str] | None = None,
        client_id: str = "test-client",
        **kwargs: Any,
    ) -> str:
        ensure_signing_key(suite.signing_key_file, suite.public_key_file)
        return issue_token(
            suite.signing_key_file.read_bytes(),
            client_id=client_id,
            scopes=scopes,
            regions=regions if regions is not None else ["41"],
            issuer=suite.auth_issuer,
            audience=suite.auth_audience,
            **kwargs,
        )

    return make


@pytest.fixture
async def registry_settings(
    suite: SuiteSettings,
    migrated_database: Callable[[str], Awaitable[tuple[str, str | None]]],
) -> RegistrySettings:
    url, schema = await migrated_database("registry")
    return RegistrySettings(suite=suite, database_url=url, database_schema=schema)


@pytest.fixture
async def registry(registry_settings: RegistrySettings) -> AsyncIterator[httpx.AsyncClient]:
    """The registry app, lifespan running, on a migrated database and the session's NATS."""
    async with running(create_registry(registry_settings)) as client:
        yield client


@contextlib.contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """Run the app under uvicorn on a free loopback port, in a thread; yields its base URL.

    For a service that another service calls over the network, as it would in production.
    """
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the app did not start under uvicorn")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        if thread.is_alive():  # a connection that never closes: stop waiting for it
            server.force_exit = True
            thread.join(timeout=10)


@pytest.fixture
def registry_server(registry_settings: RegistrySettings) -> Iterator[str]:
    """The real registry app served over HTTP on loopback: its base URL."""
    with serving(create_registry(registry_settings)) as url:
        yield url
