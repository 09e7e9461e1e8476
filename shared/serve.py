"""Run a service's app factory under uvicorn (each service's `__main__`)."""

import uvicorn

from shared.settings import ServiceSettings


def serve(factory: str, settings: ServiceSettings) -> None:
    """Serve `factory` on the settings' host and port; uvicorn handles SIGINT and SIGTERM."""
    uvicorn.run(
        factory,
        factory=True,
        host=settings.host,
        port=settings.port,
        access_log=False,
        log_level="warning",
    )
