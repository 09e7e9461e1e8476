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

import pytest
from fastapi import FastAPI

from bangfu.cli import ALL_SCOPES
from bangfu.embedded import SETTINGS
from shared.settings import SuiteSettings
from tests.conftest import serving

EXAMPLES_PER_OPERATION = 5


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
    bearer = token(*ALL_SCOPES.split(), regions=["41"])
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
                f"Authorization: Bearer {bearer}",
                "--request-timeout",
                "30",
                "--no-color",
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
