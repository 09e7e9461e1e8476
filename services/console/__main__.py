"""`python -m services.console`: serve the console with uvicorn."""

from services.console.settings import ConsoleSettings
from shared.serve import run

if __name__ == "__main__":
    settings = ConsoleSettings()
    run(
        "services.console.app:create_app",
        host=settings.host,
        port=settings.port,
    )
