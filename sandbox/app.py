"""The sandbox's app factory: `uvicorn sandbox.app:create_app --factory` (port 8190).

One process answers as every department does, over HTTP and NATS request-reply, from data
derived from the identity number, with the latency and faults the admin endpoint sets.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from sandbox import api
from sandbox.behaviour import Behaviours
from sandbox.responder import Responder
from sandbox.service import Sandbox
from sandbox.settings import SandboxSettings
from shared.events.streams import BackgroundConnection
from shared.problems import install_problem_handlers

__all__ = ["ArrivalStampingProtocol", "SandboxSettings", "create_app"]


class ArrivalStampingProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol, noting in each request's state when its bytes began to be
    parsed (`request.state.arrived`, `time.monotonic()`: uvloop's `loop.time()` is whole
    milliseconds, as of the loop's turn), which a department's latency runs from.

    The 11 departments share this process's loop: the handler of the last of a household's 11
    requests got its turn some 2 ms after the first's, behind the others' routing and reading
    (bench/verification.py), where a department of its own would have started at once.
    """

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["state"]["arrived"] = time.monotonic()


def create_app(settings: SandboxSettings | None = None) -> FastAPI:
    settings = settings or SandboxSettings()
    sandbox = Sandbox(
        behaviours=Behaviours(settings.faults, seed=settings.seed),
        index_key=settings.person_index_key.get_secret_value().encode(),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            if not settings.nats_url:
                yield
                return
            # NATS may come after the sandbox: it serves HTTP meanwhile and answers on NATS then.
            nats = BackgroundConnection(settings.nats_url, name="bangfu-sandbox")
            responder = Responder(nats.nc, sandbox, queue=settings.queue_group)

            async def answer_on_nats() -> None:
                await responder.start()
                sandbox.nc = nats.nc

            app.state.nats = nats
            await nats.when_ready(answer_on_nats)
            await nats.start()
            try:
                yield
            finally:
                await nats.stop_connecting()
                if sandbox.nc is not None:
                    sandbox.nc = None
                    await responder.stop()
                await nats.close()
        finally:
            sandbox.clock.close()  # its timerfd, watched by this loop

    app = FastAPI(
        title="Bangfu department sandbox",
        version="1.0.0",
        description="Answers as the departments do, for the demo and the tests.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.sandbox = sandbox
    app.state.nats = None  # the connection, once the lifespan opened one
    install_problem_handlers(app, api.ERRORS)
    app.router.routes.extend([api.QUERY_ROUTE, api.QUERIES_ROUTE])
    app.include_router(api.router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            schema["paths"][api.QUERY_PATH] = api.QUERY_OPENAPI
            schema["paths"][api.QUERIES_PATH] = api.QUERIES_OPENAPI
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
