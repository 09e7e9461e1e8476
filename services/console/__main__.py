"""`python -m services.console`: serve the console with uvicorn."""

import uvicorn

from services.console.settings import ConsoleSettings

if __name__ == "__main__":
    settings = ConsoleSettings()
    uvicorn.run(
        "services.console.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        access_log=False,
        log_level="warning",
    )
