"""`python -m sandbox`: serve the department sandbox."""

import uvicorn

from sandbox.app import SandboxSettings

if __name__ == "__main__":
    settings = SandboxSettings()
    uvicorn.run(
        "sandbox.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        access_log=False,
        log_level="warning",
    )
