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
        # Longer than the callers' keep-alive expiry (5 s, verification's department client
        # and httpx alike): the caller closes an idle connection first, never the server one
        # the caller is just reusing (a failed query).
        timeout_keep_alive=75,
        log_level="warning",
    )
