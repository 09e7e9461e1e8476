"""NATS connection and JetStream stream provisioning."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import nats
import structlog
from nats.aio.client import Client as NATS
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.client import JetStreamContext
from nats.js.errors import BadRequestError, ServerError
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_fixed

log = structlog.get_logger(__name__)

DEAD_LETTER_STREAM = "DLQ"
DEAD_LETTER_PREFIX = "bangfu.dlq"
DAY = 86_400.0
STORE_NOT_CREATED = 10049  # JetStream's "error creating store for stream"


async def connect(url: str, *, name: str, tls: ssl.SSLContext | None = None) -> NATS:
    """Connect and keep reconnecting for ever: the outbox holds events while NATS is away.

    Waits for NATS however long it takes: a process that must serve without it uses
    `BackgroundConnection` instead.
    """
    return await nats.connect(nats_servers(url), **_options(url, name=name, tls=tls))


def nats_servers(url: str) -> list[str]:
    """The servers of `BANGFU_NATS_URL`: one URL, or a cluster's nodes separated by commas.

    nats-py takes a list and tries each in turn (the nodes it learns from the cluster too),
    but reads a single string as one URL.
    """
    return [server.strip() for server in url.split(",") if server.strip()]


def _options(url: str, *, name: str, tls: ssl.SSLContext | None) -> dict[str, Any]:
    async def on_disconnected() -> None:
        log.warning("nats.disconnected", url=url)

    async def on_reconnected() -> None:
        log.info("nats.reconnected", url=url)

    async def on_error(exc: Exception) -> None:
        log.warning("nats.error", error=repr(exc))

    return {
        "name": name,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "disconnected_cb": on_disconnected,
        "reconnected_cb": on_reconnected,
        "error_cb": on_error,
        "tls": tls,
    }


Setup = Callable[[], Awaitable[None]]


class BackgroundConnection:
    """A NATS client that connects whenever NATS is there, then runs the setup that needs it.

    A process that waits for NATS in its lifespan serves nothing, not even /healthz, and
    cannot be stopped (in Kubernetes, a crash loop whenever NATS starts second). Here `start`
    returns once connected and set up, or at the first failed attempt: the connection and the
    setup (retried with backoff until it succeeds) go on in the background. `nc` is the client
    from the start, unconnected until NATS answers.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str,
        tls: ssl.SSLContext | None = None,
        setups: list[Setup] | None = None,
        retry_max_delay_seconds: float = 10,
    ):
        self.url = url
        self.nc = NATS()
        self.state = f"connecting to {url}"
        self.ready = False  # connected once, and every setup done
        self._name = name
        self._tls = tls
        self._setups = list(setups or ())
        self._retry_max_delay = retry_max_delay_seconds
        self._settled = asyncio.Event()  # ready, or something failed on the way
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start connecting; return when ready or at the first failure, whichever is first."""
        self._task = asyncio.create_task(self._run(), name=f"nats-connect-{self._name}")
        await self._settled.wait()

    async def when_ready(self, setup: Setup) -> None:
        """Run `setup` now if ready, else once connected (after the setups given before it)."""
        if self.ready:
            await setup()
        else:
            self._setups.append(setup)

    def check(self) -> str:
        """What /readyz says of NATS: `ok`, or what it is waiting for."""
        if self.ready:
            return "ok" if self.nc.is_connected else "disconnected"
        return self.state

    async def _run(self) -> None:
        try:
            await self._connect_and_set_up()
        except Exception:  # noqa: BLE001 - said in /readyz and the log, never raised in a task
            self.state = "gave up: see the log"
            log.exception("nats.connection_failed", url=self.url, name=self._name)
        finally:
            self._settled.set()

    async def _connect_and_set_up(self) -> None:
        failures = 0

        async def on_error(exc: Exception) -> None:
            nonlocal failures
            if self.nc.is_connected or self.ready:
                log.warning("nats.error", error=repr(exc))
                return
            # Tried every 0.5 s while NATS is away: said once, then every minute or so.
            if failures % 120 == 0:
                log.warning("nats.waiting", url=self.url, attempts=failures + 1, error=repr(exc))
            failures += 1
            self.state = f"unreachable at {self.url}: {type(exc).__name__}"
            self._settled.set()

        options = _options(self.url, name=self._name, tls=self._tls)
        await self.nc.connect(nats_servers(self.url), **{**options, "error_cb": on_error})
        log.info("nats.connected", url=self.url, name=self._name, after_attempts=failures + 1)
        delay = 0.5
        while self._setups:
            try:
                await self._setups[0]()
            except Exception as exc:  # noqa: BLE001 - retried: a stream may not be placeable yet
                self.state = f"connected, setting up: {type(exc).__name__}: {exc}"[:300]
                log.warning("nats.setup_failed", name=self._name, error=repr(exc), retry_in=delay)
                self._settled.set()
                await asyncio.sleep(delay)
                delay = min(self._retry_max_delay, delay * 2)
                continue
            self._setups.pop(0)
        self.ready = True
        self._settled.set()

    async def stop_connecting(self) -> None:
        """Give up connecting or setting up (first, when stopping: nothing starts after it)."""
        if self._task and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def close(self, *, drain_timeout: float = 5) -> None:
        """Stop connecting, then drain the connection if it is up (else just close it)."""
        await self.stop_connecting()
        with contextlib.suppress(Exception):
            if self.nc.is_connected:
                await asyncio.wait_for(self.nc.drain(), drain_timeout)
        with contextlib.suppress(Exception):
            await self.nc.close()


def service_stream(service: str) -> tuple[str, list[str]]:
    """The stream a service publishes to and the subjects it captures."""
    return service.upper(), [f"bangfu.{service}.>"]


async def ensure_stream(
    js: JetStreamContext,
    *,
    name: str,
    subjects: list[str],
    max_age_days: float = 365,
    duplicate_window_seconds: float = 120,
    replicas: int = 1,
) -> None:
    """Create the stream, or bring an existing one to this configuration."""
    config = StreamConfig(
        name=name,
        subjects=subjects,
        storage=StorageType.FILE,
        retention=RetentionPolicy.LIMITS,
        max_age=max_age_days * DAY,
        duplicate_window=duplicate_window_seconds,
        num_replicas=replicas,
    )
    async for attempt in AsyncRetrying(
        retry=retry_if_exception(_store_not_created),
        stop=stop_after_attempt(5),
        wait=wait_fixed(0.1),
        reraise=True,
    ):
        with attempt:
            try:
                await js.add_stream(config)
            except BadRequestError:
                # Already there with another configuration (say, a longer retention): update it.
                await js.update_stream(config)
    log.info("nats.stream_ready", stream=name, subjects=subjects)


def _store_not_created(exc: BaseException) -> bool:
    """nats-server's "error creating store for stream" (10049): a stream created just as the
    server removes the directories of deleted ones can find a parent directory gone (seen once
    in some 600 creations after deleting every stream). Asked again, it succeeds."""
    return isinstance(exc, ServerError) and exc.err_code == STORE_NOT_CREATED


async def ensure_dead_letter_stream(js: JetStreamContext, *, replicas: int = 1) -> None:
    """Where poison messages go, kept for ops to inspect and replay."""
    await ensure_stream(
        js, name=DEAD_LETTER_STREAM, subjects=[f"{DEAD_LETTER_PREFIX}.>"], replicas=replicas
    )
