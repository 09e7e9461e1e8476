"""The benefits app on a migrated database and the session's NATS."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from services.benefits.app import create_app
from services.benefits.settings import BenefitsSettings
from shared.settings import SuiteSettings
from tests.conftest import running


@pytest.fixture
async def benefits_settings(
    suite: SuiteSettings, migrated_database: Callable[[str], Awaitable[tuple[str, str | None]]]
) -> BenefitsSettings:
    url, schema = await migrated_database("benefits")
    return BenefitsSettings(
        suite=suite, database_url=url, database_schema=schema, follow_registry=False
    )


@pytest.fixture
async def benefits(benefits_settings: BenefitsSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app(benefits_settings)) as client:
        yield client
