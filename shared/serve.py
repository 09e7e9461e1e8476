"""Run an app factory under uvicorn: the entry of every process of the suite (each service's,
the console's and the sandboxes' `__main__`)."""

import gc
import socket
import sys
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from shared.settings import ServiceSettings


def settle_heap() -> None:
    """Collect start-up's garbage, then keep what start-up built (modules, the app, its pools)
    out of every later collection.

    A full collection otherwise walks some 180,000 objects on every run of it: a stop of the
    event loop of 60-100 ms, every few thousand requests or events, all of which it delays
    (bench/events.py: the latency's tail)."""
    gc.collect()
    gc.freeze()


class Server(uvicorn.Server):
    """uvicorn's server, settling the heap once started."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        settle_heap()  # the lifespan has opened the database, NATS and the workers


def run(factory: str, *, host: str, port: int, **options: Any) -> None:
    """Serve the app `factory` builds on host and port; uvicorn handles SIGINT and SIGTERM."""
    config = uvicorn.Config(
        factory,
        factory=True,
        host=host,
        port=port,
        access_log=False,
        log_level="warning",
        **options,
    )
    server = Server(config)
    server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def serve(factory: str, settings: ServiceSettings) -> None:
    """Serve a service's app factory on the settings' host and port."""
    run(factory, host=settings.host, port=settings.port)
