"""Each of the four services starts on its own migrated database and serves its contract."""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable

import pytest

from shared.settings import SuiteSettings
from tests.conftest import running

SERVICES = ("registry", "verification", "benefits", "notifications")


@pytest.mark.parametrize("service", SERVICES)
async def test_each_service_starts_is_ready_and_serves_openapi_and_docs(
    service: str,
    suite: SuiteSettings,
    migrated_database: Callable[[str], Awaitable[tuple[str, str | None]]],
) -> None:
    url, schema = await migrated_database(service)
    app_module = importlib.import_module(f"services.{service}.app")
    settings_module = importlib.import_module(f"services.{service}.settings")
    settings_class = getattr(settings_module, f"{service.capitalize()}Settings")
    settings = settings_class(suite=suite, database_url=url, database_schema=schema)
    async with running(app_module.create_app(settings)) as client:
        ready = await client.get("/readyz")
        openapi = (await client.get("/openapi.json")).json()
        docs = await client.get("/docs")
    assert ready.status_code == 200, ready.text
    assert openapi["openapi"].startswith("3.1")
    assert openapi["info"]["title"] == f"Bangfu {service}"
    assert {"/healthz", "/readyz"} <= set(openapi["paths"])
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
