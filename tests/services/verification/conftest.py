"""The department sandbox as a process of its own, and the verification service beside the
real registry: the services talk over HTTP and NATS as they do in production."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.registry.settings import RegistrySettings
from services.verification.app import create_app
from services.verification.domain.departments import Department
from services.verification.settings import DepartmentSettings, VerificationSettings
from shared.natsserver import NatsServer, die_with_parent, free_port
from shared.settings import SuiteSettings
from tests.conftest import running
from tests.helpers import bearer


@pytest.fixture(scope="session")
def sandbox_process(nats_server: NatsServer) -> Iterator[str]:
    """`python -m sandbox` on a free port, answering over HTTP and on the session's NATS."""
    port = free_port()
    env = {
        **os.environ,
        "BANGFU_SANDBOX_PORT": str(port),
        "BANGFU_SANDBOX_NATS_URL": nats_server.url,
        "BANGFU_SANDBOX_SEED": "7",
        "BANGFU_SANDBOX_TIMEOUT_SECONDS": "30",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox"], env=env, preexec_fn=die_with_parent
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the department sandbox did not start")
        time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
async def sandbox(sandbox_process: str) -> AsyncIterator[httpx.AsyncClient]:
    """The sandbox's admin API; every department is healthy before and after the test.

    The sandbox is one process for the session: a reset that timed out while it was busy
    (a 1,000-household batch) left its faults on for every later test, so the reset waits
    longer, tries again, and runs before each test too.
    """
    async with httpx.AsyncClient(base_url=sandbox_process, timeout=60) as client:
        await _reset_departments(client)
        yield client
        await _reset_departments(client)


async def _reset_departments(client: httpx.AsyncClient) -> None:
    for attempt in range(3):
        try:
            departments = (await client.get("/admin/departments")).json()
            for code in departments:
                await client.delete(f"/admin/departments/{code}")
            return
        except httpx.TimeoutException:
            if attempt == 2:
                raise


@pytest.fixture
async def verification_settings(
    suite: SuiteSettings,
    migrated_database: Callable[[str], Awaitable[tuple[str, str | None]]],
    sandbox_process: str,
    registry_server: str,
) -> VerificationSettings:
    url, schema = await migrated_database("verification")
    return VerificationSettings(
        suite=suite,
        database_url=url,
        database_schema=schema,
        departments_url=sandbox_process,
        registry_url=registry_server,
        poll_seconds=0.05,
        refetch_seconds=0.5,
        workers=32,
        progress_every=10,
        departments={  # quick to give up, so that a fault shows within a test's patience
            code: {"timeout_seconds": 1.0, "retries": 1, "breaker_failures": 1000}
            for code in (
                "hukou marriage social_insurance medical_insurance housing_fund tax market "
                "real_estate vehicle finance disability"
            ).split()
        },
    )


@pytest.fixture
def make_verification(
    verification_settings: VerificationSettings,
) -> Callable[..., Any]:
    """`async with make_verification(**overrides) as client:` the app with its lifespan."""

    def make(**overrides: Any) -> Any:
        if "departments" in overrides:  # model_copy does not validate: build the models here
            overrides["departments"] = {
                Department(code): DepartmentSettings.model_validate(value)
                for code, value in overrides["departments"].items()
            }
        settings = verification_settings.model_copy(update=overrides)
        return running(create_app(settings))

    return make


@pytest.fixture
def verification_app(verification_settings: VerificationSettings) -> FastAPI:
    return create_app(verification_settings)


@pytest.fixture
async def verification(verification_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with running(verification_app) as client:
        yield client


async def wait_for(
    client: httpx.AsyncClient,
    path: str,
    headers: dict[str, str],
    done: Callable[[dict[str, Any]], bool],
    *,
    timeout: float = 30,
) -> dict[str, Any]:
    """Poll `path` until `done(body)`; the last body."""
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get(path, headers=headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if done(body):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not get there in {timeout} s: {body}")
        await asyncio.sleep(0.1)


def auth(token: Callable[..., str], regions: list[str] | None = None) -> dict[str, str]:
    return bearer(token("verification:request", regions=regions or ["41"]))


@pytest.fixture
def registry_settings(registry_settings: RegistrySettings) -> RegistrySettings:
    """The registry with no public-notice wait, so that a test can enrol a household at once."""
    return registry_settings.model_copy(update={"notice_days": {"": 0}})
