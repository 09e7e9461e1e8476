"""Each service's OpenAPI, fuzzed by schemathesis against the running app: no 5xx, and no
response that breaks the schema the service itself publishes.

Few examples per operation (a smoke screen, not a soak): `st run` is what CI runs, with its
seed fixed so that a failure found here is found again.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from bangfu.cli import ALL_SCOPES
from bangfu.embedded import SETTINGS
from shared.db import is_sqlite
from shared.settings import SuiteSettings
from tests.conftest import POSTGRES_URL, running, serving
from tests.helpers import bearer

EXAMPLES_PER_OPERATION = 5
ON_POSTGRESQL = POSTGRES_URL is not None and not is_sqlite(POSTGRES_URL)
# 5xx this fuzzing found whose fix lies in the service's own code (reported to its owner).
# Until fixed they are left out of the PostgreSQL run, and each has a regression test below
# that is expected to fail there: fixing the bug makes it pass, and strict xfail then asks
# for the entry here to be removed.
KNOWN_SERVER_ERRORS_ON_POSTGRESQL: dict[str, list[str]] = {}


async def app_of(
    service: str,
    suite: SuiteSettings,
    migrated_database: Callable[[str], Awaitable[tuple[str, str | None]]],
    **settings: str,
) -> FastAPI:
    url, schema = await migrated_database(service)
    factory = importlib.import_module(f"services.{service}.app").create_app
    app: FastAPI = factory(
        SETTINGS[service](suite=suite, database_url=url, database_schema=schema, **settings)
    )
    return app


@pytest.mark.parametrize("service", list(SETTINGS))
async def test_fuzzing_finds_no_server_error_and_no_off_schema_response(
    service: str,
    suite: SuiteSettings,
    migrated_database: Callable[[str], Awaitable[tuple[str, str | None]]],
    token: Callable[..., str],
    tmp_path: Path,
) -> None:
    every_scope = token(*ALL_SCOPES.split(), regions=["41"])
    excluded = KNOWN_SERVER_ERRORS_ON_POSTGRESQL.get(service, []) if ON_POSTGRESQL else []
    with contextlib.ExitStack() as stack:
        # The others read household files from a real registry, as in production.
        registry_url = stack.enter_context(
            serving(await app_of("registry", suite, migrated_database))
        )
        service_app = (
            await app_of(service, suite, migrated_database, registry_url=registry_url)
            if service != "registry"
            else None
        )
        base_url = stack.enter_context(serving(service_app)) if service_app else registry_url
        result = await asyncio.to_thread(
            subprocess.run,
            [
                str(Path(sys.executable).parent / "st"),
                "run",
                f"{base_url}/openapi.json",
                "--checks",
                "not_a_server_error,response_schema_conformance",
                "--max-examples",
                str(EXAMPLES_PER_OPERATION),
                "--phases",
                "examples,fuzzing",
                "--seed",
                "20261123",
                "--header",
                f"Authorization: Bearer {every_scope}",
                "--request-timeout",
                "30",
                "--no-color",
                *[argument for name in excluded for argument in ("--exclude-name", name)],
                "--report",
                "ndjson",
                "--report-dir",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


async def test_a_cursor_postgresql_cannot_hold_is_refused(
    registry: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    response = await registry.get(
        "/v1/households", params={"cursor": "a\x00b"}, headers=bearer(token("registry:read"))
    )
    assert response.status_code < 500


async def test_a_delivery_position_beyond_the_column_is_refused(
    suite: SuiteSettings,
    migrated_database: Callable[[str], Awaitable[tuple[str, str | None]]],
    token: Callable[..., str],
) -> None:
    admin = bearer(token("notifications:admin"))
    async with running(await app_of("notifications", suite, migrated_database)) as client:
        created = await client.post(
            "/v1/subscriptions",
            json={
                "url": "https://integrator.example/hook",
                "secret": "s" * 16,
                "event_types": ["cn.bangfu.registry.household.*"],
            },
            headers=admin,
        )
        assert created.status_code == 201, created.text
        response = await client.get(
            f"/v1/subscriptions/{created.json()['id']}/deliveries",
            params={"after": 2**40},
            headers=admin,
        )
    assert response.status_code < 500
