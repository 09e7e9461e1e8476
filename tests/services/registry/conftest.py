from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from services.registry.app import create_app
from services.registry.settings import RegistrySettings
from shared.settings import SuiteSettings
from tests.conftest import running


@pytest.fixture
async def registry_settings(
    suite: SuiteSettings,
    migrated_database: Callable[[str], Awaitable[tuple[str, str | None]]],
) -> RegistrySettings:
    url, schema = await migrated_database("registry")
    return RegistrySettings(suite=suite, database_url=url, database_schema=schema)


@pytest.fixture
async def registry(registry_settings: RegistrySettings) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app(registry_settings)) as client:
        yield client
