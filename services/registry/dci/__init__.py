"""The DCI social registry API on the registry's app (docs/dci.md): one base URL serves it all.

`install` mounts the endpoints and the JWKS, and runs the callback delivery worker for as long
as the app's lifespan. The notify consumer of household events is one of the registry's
consumers (services/registry/consumers.py), which the NATS permissions are generated from.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import cast

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from services.registry.dci.delivery import DeliveryWorker, DestinationPolicy
from services.registry.dci.router import DciState, load_sender_keys, router
from services.registry.dci.signing import load_signer
from services.registry.settings import RegistrySettings
from shared.problems import PROBLEM_BASE, Problem

DCI_PREFIXES = ("/registry/", "/.well-known/")
# The spec's Error codes for the HTTP statuses authentication and the framework answer.
_HTTP_ERROR_CODES = {
    401: "err.request.unauthorized",
    403: "err.request.forbidden",
    404: "err.request.not_found",
    429: "err.request.too_many_requests",
}


def install(app: FastAPI, settings: RegistrySettings) -> None:
    state = DciState(
        signer=load_signer(settings.dci_signer_pem_path, settings.dci_sender_id),
        sender_keys=load_sender_keys(settings.dci_trusted_senders),
        require_signatures=settings.dci_require_signatures,
        policy=DestinationPolicy(tuple(settings.dci_callback_allowed_networks)),
    )
    app.state.dci = state
    app.include_router(router)
    _answer_problems_as_dci_errors(app)
    service_lifespan = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with service_lifespan(app):
            worker = DeliveryWorker(
                app.state.runtime.db,
                state.signer,
                state.policy,
                app.state.keyring,
                max_attempts=settings.dci_delivery_max_attempts,
                backoff_base_seconds=settings.dci_delivery_backoff_base_seconds,
                backoff_cap_seconds=settings.dci_delivery_backoff_cap_seconds,
                poll_seconds=settings.dci_delivery_poll_seconds,
                timeout_seconds=settings.dci_delivery_timeout_seconds,
            )
            state.worker = worker
            worker.start()
            try:
                yield
            finally:
                await worker.stop()
                state.worker = None

    app.router.lifespan_context = lifespan


def _answer_problems_as_dci_errors(app: FastAPI) -> None:
    """On DCI paths a refusal before the envelope (no token, a missing scope, the rate limit)
    is the spec's HttpErrorResponse `{errors: [{code, message}]}`, as application/json (what
    DCI clients parse), keeping the problem document's fields beside it."""
    render_problem = cast(
        Callable[[Request, Exception], Awaitable[Response]], app.exception_handlers[Problem]
    )

    async def handler(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, Problem) or not request.url.path.startswith(DCI_PREFIXES):
            return await render_problem(request, exc)
        body = {
            "type": PROBLEM_BASE + exc.type_,
            "title": exc.title,
            "status": exc.status,
            "detail": exc.detail,
            "errors": [
                {
                    "code": _HTTP_ERROR_CODES.get(exc.status, "err.request.bad"),
                    "message": exc.detail,
                }
            ],
        }
        return JSONResponse(body, status_code=exc.status, headers=exc.headers)

    app.add_exception_handler(Problem, handler)
