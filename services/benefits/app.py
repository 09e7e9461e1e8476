"""The benefits app factory: `uvicorn services.benefits.app:create_app --factory`."""

from fastapi import FastAPI

from services.benefits import api, consumers
from services.benefits.domain.parameters import load_book
from services.benefits.service import Engine
from services.benefits.settings import BenefitsSettings
from shared.service import create_service_app


def create_app(settings: BenefitsSettings | None = None) -> FastAPI:
    """Build the app; a malformed parameter file stops it here, naming file, key and reason."""
    settings = settings or BenefitsSettings()
    engine = Engine(load_book(settings.parameters_dir))
    app = create_service_app(
        settings=settings,
        title="Bangfu benefits",
        description=(
            "Rules as code: dated regional parameters, eligibility, "
            "the measures card (帮扶措施明白卡), 脱困, the ledger, what-if."
        ),
        routers=[api.router],
        subscriptions=consumers.subscriptions(settings, engine),
        errors=api.ERRORS,
    )
    app.state.engine = engine
    return app
