"""Each of the four services starts on its own migrated database and serves its contract."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts

from sandbox.app import create_app as create_sandbox
from services.console.app import create_app as create_console
from services.console.settings import ConsoleSettings
from shared.natsserver import free_port
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


def _runs_on_the_loop(call: Callable[..., Any]) -> bool:
    """FastAPI awaits coroutine functions (and async generators, and instances whose
    `__call__` is one); anything else it sends to the thread pool."""
    if inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call):
        return True
    if inspect.isfunction(call):
        return False
    method = type(call).__call__  # an instance, as HTTPBearer
    return inspect.iscoroutinefunction(method) or inspect.isasyncgenfunction(method)


def test_no_route_sends_a_dependency_or_its_endpoint_to_the_thread_pool(tmp_path: Path) -> None:
    # A trivial sync dependency (the verifier, the purpose header) cost each request a hop to
    # the thread pool and back, about 0.3-1 ms on a busy loop (bench/verification.py).
    suite = SuiteSettings(home=tmp_path)
    apps: dict[str, FastAPI] = {
        service: importlib.import_module(f"services.{service}.app").create_app(
            getattr(
                importlib.import_module(f"services.{service}.settings"),
                f"{service.capitalize()}Settings",
            )(suite=suite)
        )
        for service in SERVICES
    }
    provider = f"http://127.0.0.1:{free_port()}"  # the console signs in through one
    apps["console"] = create_console(
        ConsoleSettings(suite=SuiteSettings(home=tmp_path, auth_issuer=provider))
    )
    apps["sandbox"] = create_sandbox()
    in_the_pool = []
    for name, app in apps.items():
        routes = [
            c.original_route
            for c in iter_route_contexts(app.routes)
            if isinstance(c.original_route, APIRoute)
        ]
        assert routes, name
        for route in routes:
            stack = [route.dependant]
            while stack:
                dependant = stack.pop()
                stack.extend(dependant.dependencies)
                if dependant.call is not None and not _runs_on_the_loop(dependant.call):
                    in_the_pool.append(f"{name} {route.path}: {dependant.call.__qualname__}")
    assert in_the_pool == []
