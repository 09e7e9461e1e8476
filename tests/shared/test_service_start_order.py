"""The service runtime in-process, before NATS: the lifespan returns at once and says what waits.

The same behaviour as real processes is in tests/deploy/test_start_order.py; this one is fast.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.registry.app import create_app
from services.registry.settings import RegistrySettings
from shared.migrations import upgrade
from shared.natsserver import NatsServer, free_port
from shared.problems import Problem
from shared.service import ServiceRuntime
from shared.settings import SuiteSettings
from tests.conftest import running


async def test_the_lifespan_returns_at_once_and_connects_when_nats_arrives(
    tmp_path: Path,
) -> None:
    nats = NatsServer(port=free_port(), store_dir=tmp_path / "nats")
    suite = SuiteSettings(home=tmp_path / "home", nats_url=nats.url, log_json=True)
    url = f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}"
    await asyncio.to_thread(upgrade, "registry", url=url)
    app = create_app(RegistrySettings(suite=suite, database_url=url))
    runtime: ServiceRuntime = app.state.runtime
    try:
        async with asyncio.timeout(10), running(app) as client:
            waiting = await client.get("/readyz")
            assert waiting.status_code == 503
            checks = waiting.json()["checks"]
            assert checks["nats"] == f"unreachable at {nats.url}: ConnectionRefusedError"
            assert checks["consumer registry-exit-eligible"] == "waiting for NATS"
            assert checks["database"] == "ok"
            with pytest.raises(Problem) as refused:
                runtime.connected_js()  # what a route that needs JetStream now calls
            assert (refused.value.status, refused.value.type_) == (503, "nats-unavailable")

            await asyncio.to_thread(nats.start)
            while (await client.get("/readyz")).status_code != 200:
                await asyncio.sleep(0.05)
            assert runtime.connected_js() is runtime.js
            assert {r.subscription.name for r in runtime.consumers} >= {"registry-exit-eligible"}
    finally:
        nats.stop()


async def test_stopping_before_nats_ever_answered_takes_no_time(tmp_path: Path) -> None:
    suite = SuiteSettings(home=tmp_path / "home", nats_url=f"nats://127.0.0.1:{free_port()}")
    url = f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}"
    await asyncio.to_thread(upgrade, "registry", url=url)
    app = create_app(RegistrySettings(suite=suite, database_url=url))
    async with asyncio.timeout(5), running(app) as client:
        assert (await client.get("/healthz")).status_code == 200
    assert app.state.runtime.consumers == []
