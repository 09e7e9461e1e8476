"""Two console processes (real uvicorn, `python -m services.console`) sharing one sessions table.

A browser signs in on one and is signed in on the other; a restart signs nobody out; signing
out on one ends the session on both, and the table holds no token in clear.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from bangfu.embedded import migrate
from services.console.sessions import sessions_table
from services.registry.app import create_app as create_registry
from services.registry.settings import RegistrySettings
from shared.crypto import generate_keys
from shared.db import Database, create_engine
from shared.migrations import schema_at_head
from shared.natsserver import free_port
from tests.conftest import serving
from tests.console.conftest import (
    ConsoleIdp,
    Stack,
    csrf_of,
    migrate_console,
    sign_in,
)

PERSON = "shequ-411302"
COOKIE = "bangfu-console"


@contextlib.contextmanager
def console_process(env: dict[str, str], port: int) -> Iterator[str]:
    """`python -m services.console` on `port`, until it answers /healthz; stopped after."""
    process = subprocess.Popen(
        [sys.executable, "-m", "services.console"],
        env={**env, "BANGFU_CONSOLE_PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, "the console did not become ready"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
async def console_database(
    migrated_database: Callable[[str], Awaitable[tuple[str, str | None]]],
) -> tuple[str, str | None]:
    return await migrated_database("console")


def test_two_replicas_share_sessions_across_restart_and_sign_out(
    console_idp: ConsoleIdp,
    registry_settings: RegistrySettings,
    console_database: tuple[str, str | None],
    tmp_path: Path,
) -> None:
    url, schema = console_database
    migrate_console(url, schema)  # again: at head already, left alone
    keys, index_key = generate_keys("intl")
    suite = registry_settings.suite.model_copy(update={"auth_issuer": console_idp.idp.issuer})
    with serving(create_registry(registry_settings.model_copy(update={"suite": suite}))) as reg:
        env = {
            **os.environ,
            "BANGFU_HOME": str(tmp_path),
            "BANGFU_AUTH_ISSUER": console_idp.idp.issuer,
            "BANGFU_CONSOLE_PUBLIC_URL": console_idp.console_url,
            "BANGFU_CONSOLE_REGISTRY_URL": reg,
            "BANGFU_CONSOLE_DATABASE_URL": url,
            "BANGFU_CONSOLE_ENCRYPTION_KEYS": keys,
            "BANGFU_CONSOLE_BLIND_INDEX_KEY": index_key,
        }
        if schema:
            env["BANGFU_CONSOLE_DATABASE_SCHEMA"] = schema
        # Replica one on the port the provider redirects to (the load balancer's), two beside.
        one_port, two_port = console_idp.console_port, free_port()
        with httpx.Client(follow_redirects=False) as browser:
            with console_process(env, two_port) as two:
                with console_process(env, one_port) as one:
                    home = sign_in(browser, Stack(one, reg, console_idp), PERSON)
                    assert home.status_code == 200, home.text
                    assert PERSON in home.text
                    on_two = browser.get(f"{two}/")
                    assert on_two.status_code == 200
                    assert PERSON in on_two.text
                    assert '<span class="role">社区</span>' in on_two.text
                    # One row (the sign-in's was dropped at the callback), sealed: no token,
                    # no name in clear.
                    states = stored_states(url, schema)
                    assert len(states) == 1
                    assert states[0].startswith("v1.intl.k1.")
                    assert "eyJ" not in states[0] and PERSON not in states[0]

                with console_process(env, one_port) as one:  # replica one restarted
                    again = browser.get(f"{one}/")
                    assert again.status_code == 200
                    assert PERSON in again.text
                    cookie = browser.cookies.get(COOKIE)
                    assert cookie
                    cookies = {COOKIE: cookie}

                    out = browser.post(f"{two}/auth/logout", data={"csrf": csrf_of(on_two)})
                    assert out.status_code == 303

                    # The old cookie, replayed on either replica, is nobody's session now.
                    for replica in (one, two):
                        replay = httpx.get(f"{replica}/", cookies=cookies)
                        assert replay.status_code == 200
                        assert PERSON not in replay.text
                        refused = httpx.get(f"{replica}/households", cookies=cookies)
                        assert refused.status_code == 303
                        assert refused.headers["location"].startswith("/auth/login")
    assert stored_states(url, schema) == [], "a session is left after sign-out"


def stored_states(url: str, schema: str | None) -> list[str]:
    """The `state` of every row in the sessions table."""

    async def rows() -> list[str]:
        engine = create_engine(url, schema=schema)
        try:
            async with engine.connect() as connection:
                result = await connection.execute(sa.select(sessions_table.c.state))
                return [row.state for row in result]
        finally:
            await engine.dispose()

    return asyncio.run(rows())


async def test_bangfu_migrate_brings_the_sessions_table_to_head(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`bangfu migrate` with no names migrates the console too (its own file under home here)."""
    for key in [key for key in os.environ if key.startswith("BANGFU_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("BANGFU_HOME", str(tmp_path))
    said: list[str] = []
    await asyncio.to_thread(migrate, say=said.append)

    assert any(line.startswith("migrated console (sqlite") for line in said), said
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'console.db'}")
    try:
        assert await schema_at_head(database, "console")
    finally:
        await database.dispose()
