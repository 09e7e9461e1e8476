"""The notifications app factory: `uvicorn services.notifications.app:create_app --factory`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from services.notifications import api, consumers, service
from services.notifications.delivery import DeliveryWorker
from services.notifications.dispatch import Dispatcher
from services.notifications.metrics import MessageOutcomes
from services.notifications.scheduler import Scheduler
from services.notifications.settings import NotificationsSettings
from shared.service import ServiceRuntime, create_service_app


def create_app(settings: NotificationsSettings | None = None) -> FastAPI:
    settings = settings or NotificationsSettings()
    app = create_service_app(
        settings=settings,
        title="Bangfu notifications",
        description="Follow-up: visits due, referrals, webhooks, SMS, email, inbox.",
        routers=[api.router, api.events_router],
        subscriptions=consumers.subscriptions(settings),
        errors=api.ERRORS,
    )
    keyring = settings.keyring()
    app.state.keyring = keyring
    app.state.destinations = settings.destination_policy()
    engine = service.Engine.from_settings(settings)
    outcomes = MessageOutcomes(refresh_seconds=settings.metrics_refresh_seconds)
    app.state.runtime.metrics.registry.register(outcomes)
    service_lifespan = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        """The service's own resources, then the workers that send and schedule."""
        async with service_lifespan(app):
            runtime: ServiceRuntime = app.state.runtime
            outcomes.start(runtime.db)
            if not settings.workers:
                try:
                    yield
                finally:
                    await outcomes.stop()
                return
            delivery = DeliveryWorker(runtime.db, settings, keyring)
            dispatcher = Dispatcher.from_settings(runtime.db, settings)
            scheduler = Scheduler(
                runtime.db, engine, name=settings.replica, registry=runtime.metrics.registry
            )
            for worker in (delivery, dispatcher, scheduler):
                worker.start()
            app.state.delivery = delivery
            try:
                yield
            finally:
                for worker in (scheduler, dispatcher, delivery):
                    await worker.stop()
                await outcomes.stop()

    app.router.lifespan_context = lifespan
    return app
