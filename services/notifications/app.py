"""The notifications app factory: `uvicorn services.notifications.app:create_app --factory`."""

from fastapi import FastAPI

from services.notifications import api, consumers
from services.notifications.settings import NotificationsSettings
from shared.service import create_service_app


def create_app(settings: NotificationsSettings | None = None) -> FastAPI:
    settings = settings or NotificationsSettings()
    return create_service_app(
        settings=settings,
        title="Bangfu notifications",
        description="Follow-up: visits due, referrals, webhooks, SMS, email, inbox.",
        routers=[api.router],
        subscriptions=consumers.subscriptions(settings),
        errors=api.ERRORS,
    )
