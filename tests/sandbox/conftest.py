"""The sandbox app with its lifespan running, on real NATS, and on a real socket when needed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import nats
import pytest
import uvicorn
from fastapi import FastAPI
from nats.aio.client import Client as NATS
from starlette.types import ASGIApp

from sandbox.app import create_app
from sandbox.settings import SandboxSettings
from shared.natsserver import NatsServer, free_port
from tests.conftest import running


@pytest.fixture(scope="session")
def department_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A nats-server of its own for department request-reply.

    A department query must carry the identity number in plain (the department looks the person
    up by it), and the session-wide scan rightly fails any plaintext number on the suite's NATS.
    """
    store = tmp_path_factory.mktemp("department-nats")
    server = NatsServer(port=free_port(), store_dir=store, log_file=store / "nats.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def make_sandbox(department_nats: NatsServer) -> Callable[..., FastAPI]:
    """`make_sandbox(seed=7)` -> the app, on the department NATS unless `nats_url` says else."""

    def make(**settings: Any) -> FastAPI:
        settings.setdefault("nats_url", department_nats.url)
        return create_app(SandboxSettings(**settings))

    return make


@pytest.fixture
async def client(make_sandbox: Callable[..., FastAPI]) -> AsyncIterator[httpx.AsyncClient]:
    """The sandbox (seed 1) in process, its lifespan running: it answers on NATS too."""
    async with running(make_sandbox(seed=1)) as client:
        yield client


@pytest.fixture
async def nc(department_nats: NatsServer) -> AsyncIterator[NATS]:
    connection = await nats.connect(department_nats.url)
    yield connection
    await connection.close()


@contextlib.asynccontextmanager
async def serving(app: ASGIApp, **options: Any) -> AsyncIterator[str]:
    """Serve `app` with uvicorn (and these options) on a free port: timeouts and streaming as
    a network has them."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=free_port(),
        log_level="warning",
        timeout_graceful_shutdown=1,
        **options,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        await task
