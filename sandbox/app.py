"""The sandbox's app factory: `uvicorn sandbox.app:create_app --factory` (port 8190).

Its department behaviour (deterministic answers, latency and faults) comes with the
verification broker; for now it is the process the suite starts and checks.
"""

from fastapi import FastAPI
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.problems import install_problem_handlers
from shared.settings import DEFAULT_PORTS


class SandboxSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BANGFU_SANDBOX_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORTS["sandbox"]


def create_app(settings: SandboxSettings | None = None) -> FastAPI:
    app = FastAPI(
        title="Bangfu department sandbox",
        version="1.0.0",
        description="Answers as the departments do, for the demo and the tests.",
    )
    app.state.settings = settings or SandboxSettings()
    install_problem_handlers(app)

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
