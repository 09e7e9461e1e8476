"""`python -m sandbox`: serve the department sandbox."""

from sandbox.app import ArrivalStampingProtocol, SandboxSettings
from shared.serve import run

if __name__ == "__main__":
    settings = SandboxSettings()
    run(
        "sandbox.app:create_app",
        host=settings.host,
        port=settings.port,
        # Longer than the callers' keep-alive expiry (5 s, verification's department client
        # and httpx alike): the caller closes an idle connection first, never the server one
        # the caller is just reusing (a failed query).
        timeout_keep_alive=75,
        http=ArrivalStampingProtocol,
    )
