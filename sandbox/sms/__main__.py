"""`python -m sandbox.sms`: serve the SMS gateway sandbox."""

import uvicorn

from sandbox.sms.app import SmsSandboxSettings

if __name__ == "__main__":
    settings = SmsSandboxSettings()
    uvicorn.run(
        "sandbox.sms.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        access_log=False,
        log_level="warning",
    )
