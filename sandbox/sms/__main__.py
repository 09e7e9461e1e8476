"""`python -m sandbox.sms`: serve the SMS gateway sandbox."""

from sandbox.sms.app import SmsSandboxSettings
from shared.serve import run

if __name__ == "__main__":
    settings = SmsSandboxSettings()
    run(
        "sandbox.sms.app:create_app",
        host=settings.host,
        port=settings.port,
    )
