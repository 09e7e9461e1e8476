"""The benefits app factory: `uvicorn services.benefits.app:create_app --factory`."""

from fastapi import FastAPI

from services.benefits import api, consumers
from services.benefits.settings import BenefitsSettings
from shared.service import create_service_app


def create_app(settings: BenefitsSettings | None = None) -> FastAPI:
    settings = settings or BenefitsSettings()
    return create_service_app(
        settings=settings,
        title="Bangfu benefits",
        description=(
            "Rules as code: dated regional parameters, eligibility, "
            "the measures card (帮扶措施明白卡)."
        ),
        routers=[api.router],
        subscriptions=consumers.subscriptions(settings),
        errors=api.ERRORS,
    )
