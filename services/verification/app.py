"""The verification app factory: `uvicorn services.verification.app:create_app --factory`."""

from fastapi import FastAPI

from services.verification import api, consumers
from services.verification.settings import VerificationSettings
from shared.service import create_service_app


def create_app(settings: VerificationSettings | None = None) -> FastAPI:
    settings = settings or VerificationSettings()
    app = create_service_app(
        settings=settings,
        title="Bangfu verification",
        description="核对: consents, department adapters, reports (核对报告).",
        routers=[api.router],
        subscriptions=consumers.subscriptions(settings),
        errors=api.ERRORS,
    )
    app.state.keyring = settings.keyring()
    return app
