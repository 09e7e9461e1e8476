"""The verification app factory: `uvicorn services.verification.app:create_app --factory`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

from fastapi import FastAPI

from services.verification import api, consumers
from services.verification.metrics import VerificationMetrics
from services.verification.settings import VerificationSettings
from services.verification.worker import Departments, Verifier
from shared.events.envelope import CloudEvent
from shared.events.streams import BackgroundConnection, ensure_stream
from shared.registry_client import RegistryClient
from shared.service import ServiceRuntime, create_service_app


def create_app(settings: VerificationSettings | None = None) -> FastAPI:
    settings = settings or VerificationSettings()
    app = create_service_app(
        settings=settings,
        title="Bangfu verification",
        description=(
            "核对: consents (核对授权书), department adapters, verifications and their reports "
            "(核对报告), batches (批量核对), and who looked at a person's data."
        ),
        routers=[api.router],
        subscriptions=consumers.subscriptions(settings),
        errors=api.ERRORS,
    )
    app.state.keyring = settings.keyring()
    runtime_lifespan = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with runtime_lifespan(app), _verifier(app, settings, app.state.runtime):
            yield

    app.router.lifespan_context = lifespan
    return app


@contextlib.asynccontextmanager
async def _verifier(
    app: FastAPI, settings: VerificationSettings, runtime: ServiceRuntime
) -> AsyncIterator[None]:
    """The department clients, the verifier's loops and the department-feed consumer."""
    suite = settings.suite
    # The departments' own NATS, if they have one, may come after the service, like the suite's.
    own_nats = (
        BackgroundConnection(
            settings.department_nats_url,
            name="bangfu-verification-departments",
            tls=suite.nats_tls(),
        )
        if settings.department_nats_url
        else None
    )
    if own_nats:
        await own_nats.start()
    departments = Departments(settings, own_nats.nc if own_nats else runtime.nc)
    registry = RegistryClient.from_settings(settings)
    metrics = VerificationMetrics(runtime.metrics.registry, departments)
    verifier = Verifier(settings, runtime.db, app.state.keyring, departments, registry, metrics)
    relay_wake = runtime.db.after_commit

    def after_commit(events: Sequence[CloudEvent]) -> None:
        if relay_wake:
            relay_wake(events)
        verifier.committed(events)

    runtime.db.after_commit = after_commit

    async def follow_department_feed() -> None:
        # Departments publish changes on plain NATS; this stream keeps them until handled.
        await ensure_stream(
            runtime.js,
            name=consumers.DEPARTMENT_FEED_STREAM,
            subjects=consumers.DEPARTMENT_FEED_SUBJECTS,
            max_age_days=suite.stream_max_age_days,
            duplicate_window_seconds=suite.stream_duplicate_window_seconds,
            replicas=suite.stream_replicas,
        )
        # Under the runtime: supervised, counted and named in /readyz like the event consumers.
        await runtime.start_consumer(consumers.department_feed(settings))

    await runtime.when_nats_ready(follow_department_feed)
    verifier.start()
    app.state.verifier = verifier
    try:
        yield
    finally:
        await verifier.stop()
        await departments.aclose()
        await registry.aclose()
        if own_nats:
            await own_nats.close()
