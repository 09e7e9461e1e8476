"""What every service has: the runtime its lifespan owns, the app factory, health and metrics."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
import structlog
from asyncpg.exceptions import (  # type: ignore[import-untyped]
    CannotConnectNowError,
    TooManyConnectionsError,
)
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response
from nats.aio.client import Client as NATS
from nats.js.client import JetStreamContext
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from shared import audit
from shared.auth import RateLimiter, TokenVerifier
from shared.db import Database, UnitOfWork, unreachable
from shared.events.consumer import ConsumerRunner, Subscription
from shared.events.outbox import Backlog, OutboxRelay
from shared.events.streams import (
    BackgroundConnection,
    ensure_dead_letter_stream,
    ensure_stream,
    service_stream,
)
from shared.migrations import schema_at_head
from shared.observability import (
    Metrics,
    RequestContextMiddleware,
    configure_logging,
    configure_tracing,
)
from shared.problems import (
    BodyGuardMiddleware,
    ErrorTable,
    Problem,
    install_problem_handlers,
    problem_response,
)
from shared.settings import ServiceSettings

log = structlog.get_logger(__name__)


class ServiceRuntime:
    """Every resource a service holds while it runs: database, NATS, relay and consumers."""

    def __init__(
        self, settings: ServiceSettings, subscriptions: Sequence[Subscription], metrics: Metrics
    ):
        self.settings = settings
        self.subscriptions = subscriptions
        self.metrics = metrics
        self.consumers: list[ConsumerRunner] = []
        self._schema_ready = False
        self._checkpointed_seq: int | None = None
        restarts = Counter(
            "bangfu_consumer_restarts",
            "Times a consumer's fetch loop died and was started again",
            ["consumer"],
            registry=metrics.registry,
        )
        self.consumer_restarts = restarts.labels
        for subscription in subscriptions:
            restarts.labels(consumer=subscription.name)  # the series is there at 0 from the start

    async def start(self) -> None:
        """Open the database and start connecting to NATS; neither has to be there yet.

        Returns at once if NATS is away: the service answers /healthz, says what it waits for
        in /readyz, takes writes into its outbox, and stops on SIGTERM. Once NATS answers, the
        streams are provisioned, the relay publishes the outbox and the consumers start.
        """
        settings, suite = self.settings, self.settings.suite
        url, schema = settings.database
        self.db = Database(url, schema=schema)
        self.nats = BackgroundConnection(
            suite.nats_url,
            name=f"bangfu-{settings.service}",
            tls=suite.nats_tls(),
            setups=[self._start_streaming],
        )
        self.nc: NATS = self.nats.nc
        self.js: JetStreamContext = self.nc.jetstream()
        self.relay = OutboxRelay(
            self.db,
            self.js,
            batch_size=settings.outbox_batch_size,
            poll_seconds=settings.outbox_poll_seconds,
            on_backlog=self._record_backlog,
        )
        self.db.after_commit = self.relay.wake
        self.db.publish_at_once = self.relay.publish_at_once
        self._checkpointer = asyncio.create_task(
            self._checkpoint_periodically(), name="audit-checkpoint"
        )
        await self.nats.start()
        log.info(
            "service.started",
            service=settings.service,
            database=self.db.dialect,
            nats=self.nats.check(),
        )

    async def _start_streaming(self) -> None:
        """Streams, relay and consumers: what waits for NATS (retried until it succeeds)."""
        await self._ensure_stream(self.settings.service)
        await ensure_dead_letter_stream(self.js, replicas=self.settings.suite.stream_replicas)
        self.relay.start()
        started = {runner.subscription.name for runner in self.consumers}
        for subscription in self.subscriptions:
            if subscription.name in started:  # started before a failure that is now retried
                continue
            # The producer may not have started yet: provision its stream the same way.
            await self._ensure_stream(subscription.stream.lower())
            await self.start_consumer(subscription)

    def connected_js(self) -> JetStreamContext:
        """JetStream for a request that needs it now: 503 problem+json while NATS is away."""
        state = self.nats.check()
        if state != "ok":
            raise Problem(
                503,
                "nats-unavailable",
                f"NATS is not available ({state}); try again shortly",
                headers={"Retry-After": "5"},
            )
        return self.js

    async def when_nats_ready(self, setup: Callable[[], Awaitable[None]]) -> None:
        """Run a service's own NATS setup (a stream, a consumer) now or once NATS is there."""
        await self.nats.when_ready(setup)

    async def start_consumer(self, subscription: Subscription) -> ConsumerRunner:
        """Run a consumer under this runtime: restarted when its loop dies, counted in
        `bangfu_consumer_restarts_total`, named in /readyz, stopped with the service."""
        settings = self.settings
        self.consumer_restarts(consumer=subscription.name)  # at 0 for one started later too
        runner = ConsumerRunner(
            self.db,
            self.js,
            subscription,
            batch_size=settings.consumer_batch_size,
            max_deliver=settings.consumer_max_deliver,
            ack_wait_seconds=settings.consumer_ack_wait_seconds,
            on_lag=lambda name, lag: self.metrics.consumer_lag(consumer=name).set(lag),
            restart_delay_seconds=settings.consumer_restart_delay_seconds,
            restart_max_delay_seconds=settings.consumer_restart_max_delay_seconds,
            restart_window_seconds=settings.consumer_restart_window_seconds,
            on_restart=lambda name: self.consumer_restarts(consumer=name).inc(),
        )
        await runner.start()
        self.consumers.append(runner)
        return runner

    async def _ensure_stream(self, service: str) -> None:
        suite = self.settings.suite
        name, subjects = service_stream(service)
        await ensure_stream(
            self.js,
            name=name,
            subjects=subjects,
            max_age_days=suite.stream_max_age_days,
            duplicate_window_seconds=suite.stream_duplicate_window_seconds,
            replicas=suite.stream_replicas,
        )

    async def stop(self) -> None:
        await self.nats.stop_connecting()
        await asyncio.gather(*(runner.stop() for runner in self.consumers))
        await self.relay.stop()
        self._checkpointer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._checkpointer
        await self._checkpoint_audit_chain()  # the last word before the process goes
        await self.nats.close()
        await self.db.dispose()
        log.info("service.stopped", service=self.settings.service)

    async def _checkpoint_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.settings.audit_checkpoint_seconds)
            await self._checkpoint_audit_chain()

    async def _checkpoint_audit_chain(self) -> None:
        """Sign the audit chain's head into the checkpoint file, outside the database.

        Periodic, not per append: an append's transaction may still roll back (a checkpoint
        naming a record that never committed would read as tampering), and a file write per
        audited request would sit on every unmasked read. Deleting records newer than the
        last checkpoint, at most `audit_checkpoint_seconds` old, goes unseen.
        """
        settings = self.settings
        try:
            async with self.db.sessionmaker() as session:
                head = await audit.head_checkpoint(session, now=datetime.now(UTC))
            if head.seq == self._checkpointed_seq:
                return
            await asyncio.to_thread(
                audit.write_checkpoint,
                settings.audit_checkpoint_path,
                head,
                key=settings.audit_checkpoint_key.get_secret_value().encode(),
                profile=settings.suite.crypto_profile,
            )
            self._checkpointed_seq = head.seq
        except Exception as exc:  # noqa: BLE001 - logged; the next period tries again
            log.warning("audit.checkpoint_failed", error=repr(exc))

    def _record_backlog(self, backlog: Backlog) -> None:
        self.metrics.outbox_backlog.set(backlog.count)
        self.metrics.outbox_oldest_age.set(backlog.oldest_age_seconds)

    async def readiness(self) -> dict[str, str]:
        """Each dependency and whether it is usable: database, schema at head, NATS, and each
        consumer (not ready once it died `consumer_unready_after_restarts` times in its window).
        """
        checks: dict[str, str] = {}
        try:
            await self.db.ping()
            checks["database"] = "ok"
            if not self._schema_ready:
                self._schema_ready = await schema_at_head(self.db, self.settings.service)
            checks["schema"] = "ok" if self._schema_ready else "not at head: run `bangfu migrate`"
        except Exception as exc:  # noqa: BLE001 - report, do not raise
            checks["database"] = f"unreachable: {type(exc).__name__}"
        checks["nats"] = self.nats.check()
        for runner in self.consumers:
            checks[f"consumer {runner.subscription.name}"] = self._consumer_check(runner)
        started = {runner.subscription.name for runner in self.consumers}
        for subscription in self.subscriptions:
            if subscription.name not in started:
                checks[f"consumer {subscription.name}"] = "waiting for NATS"
        return checks

    def _consumer_check(self, runner: ConsumerRunner) -> str:
        restarts = runner.recent_restarts()
        if restarts < self.settings.consumer_unready_after_restarts:
            return "ok"
        return (
            f"restarted {restarts} times in the last {runner.restart_window_seconds:g}s, "
            f"last error: {runner.last_error}"
        )


class FastJSONResponse(JSONResponse):
    """JSON written by orjson, which knows dates and times (as `isoformat` writes them); what it
    does not know goes through `jsonable_encoder`. The values of `JSONResponse(
    jsonable_encoder(body))` without its walk of every value and the standard library's
    encoder: 0.13 ms of a 202 with 4 members' consents (bench/verification.py); 38 µs against
    5 of a household's file (bench/registry.py, whose create and update answer with one each).
    """

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=jsonable_encoder, option=orjson.OPT_NON_STR_KEYS)


def get_runtime(request: Request) -> ServiceRuntime:
    runtime: ServiceRuntime = request.app.state.runtime
    return runtime


async def get_unit_of_work(request: Request) -> AsyncIterator[UnitOfWork]:
    """One unit of work per request; the route commits it, anything else is rolled back."""
    async with get_runtime(request).db.unit_of_work() as uow:
        yield uow


async def get_unit_of_work_one_write(request: Request) -> AsyncIterator[UnitOfWork]:
    """A unit of work by key that writes with one statement (`Database.unit_of_work`)."""
    async with get_runtime(request).db.unit_of_work(one_write=True) as uow:
        yield uow


UnitOfWorkDep = Annotated[UnitOfWork, Depends(get_unit_of_work)]
UnitOfWorkOneWriteDep = Annotated[UnitOfWork, Depends(get_unit_of_work_one_write)]

_operations = APIRouter(tags=["operations"])


@_operations.get("/healthz", summary="Alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@_operations.get(
    "/readyz", summary="Ready: database reachable, schema at head, NATS connected, consumers up"
)
async def readyz(request: Request) -> Response:
    checks = await get_runtime(request).readiness()
    if all(value == "ok" for value in checks.values()):
        return JSONResponse({"status": "ready", "checks": checks})
    return problem_response(503, "not-ready", "a dependency is not ready", checks=checks)


@_operations.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    return Response(
        generate_latest(get_runtime(request).metrics.registry), media_type=CONTENT_TYPE_LATEST
    )


def _from_the_database_driver(exc: BaseException) -> bool:
    """Raised inside the database driver or SQLAlchemy (not, say, by a file write in a route)."""
    traceback = exc.__traceback__
    while traceback is not None:
        module = traceback.tb_frame.f_globals.get("__name__", "")
        if module.startswith(("asyncpg", "sqlalchemy", "aiosqlite")):
            return True
        traceback = traceback.tb_next
    return False


def _answer_503_while_the_database_is_away(app: FastAPI) -> None:
    """A request that needs the database while it is away answers 503 problem+json at once.

    Refused, not resolvable, still starting up, or a pooled connection that PostgreSQL dropped
    (SQLAlchemy then discards the pool, so the next request connects afresh): no restart is
    needed when the database comes back. Any other database error stays a logged 500.
    """

    async def unavailable(request: Request, exc: Exception) -> Response:
        log.warning("request.database_unavailable", path=request.url.path, error=repr(exc))
        return problem_response(
            503,
            "database-unavailable",
            "the database is not reachable; try again shortly",
            instance=request.url.path,
            headers={"Retry-After": "5"},
        )

    async def maybe_unavailable(request: Request, exc: Exception) -> Response:
        # A bare OSError counts only from the driver, not from, say, a file a route writes.
        if unreachable(exc) and (isinstance(exc, DBAPIError) or _from_the_database_driver(exc)):
            return await unavailable(request, exc)
        raise exc  # the 500 handler renders and logs it

    for refusal in (CannotConnectNowError, TooManyConnectionsError, PoolTimeout):
        app.add_exception_handler(refusal, unavailable)
    for error in (DBAPIError, OSError):
        app.add_exception_handler(error, maybe_unavailable)


def create_service_app(
    *,
    settings: ServiceSettings,
    title: str,
    description: str,
    routers: Sequence[APIRouter] = (),
    subscriptions: Sequence[Subscription] = (),
    errors: ErrorTable | None = None,
    extra_media_types: tuple[str, ...] = (),
    body_limits: Mapping[str, int] | None = None,
    **fastapi_options: Any,
) -> FastAPI:
    """Build a service's app; its resources open in the lifespan, not here."""
    suite = settings.suite
    configure_logging(level=suite.log_level, json=suite.log_json)
    configure_tracing(settings.service)
    runtime = ServiceRuntime(settings, subscriptions, Metrics(settings.service))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(
        title=title, description=description, version="1.0.0", lifespan=lifespan, **fastapi_options
    )
    app.state.settings = settings
    app.state.runtime = runtime
    app.state.token_verifier = TokenVerifier.from_settings(suite)
    app.state.rate_limiter = RateLimiter(rate=suite.rate_limit_per_second)
    install_problem_handlers(app, errors)
    _answer_503_while_the_database_is_away(app)
    app.add_middleware(
        BodyGuardMiddleware,
        max_body_bytes=suite.max_body_bytes,
        extra_media_types=extra_media_types,
        path_limits=body_limits,
    )
    app.add_middleware(RequestContextMiddleware, metrics=runtime.metrics)
    app.include_router(_operations)
    for router in routers:
        app.include_router(router)
    return app
