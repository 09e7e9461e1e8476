"""The registry's app factory: `uvicorn services.registry.app:create_app --factory`."""

from fastapi import FastAPI

from services.registry import api, consumers, dci
from services.registry.api.excel import LEDGER_MAX_BYTES
from services.registry.settings import RegistrySettings
from shared.service import create_service_app


def create_app(settings: RegistrySettings | None = None) -> FastAPI:
    settings = settings or RegistrySettings()
    app = create_service_app(
        settings=settings,
        title="Bangfu registry",
        description="一户一档: households, members, the review workflow, helpers and visits.",
        routers=[api.router],
        errors=api.ERRORS,
        extra_media_types=("multipart/form-data",),  # the ledger upload
        body_limits={"/v1/imports/ledger": LEDGER_MAX_BYTES},
        subscriptions=consumers.subscriptions(settings),
    )
    app.state.keyring = settings.keyring()
    dci.install(app, settings)  # the DCI social registry API on the same base URL
    return app
