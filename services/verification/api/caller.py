"""Who is calling, as the routes see it: a principal with the service's keys and today."""

from collections.abc import Awaitable, Callable
from datetime import date
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse

from services.verification import service
from services.verification.worker import Verifier
from shared.auth import Principal, require
from shared.registry_client import HouseholdNotFound
from shared.service import FastJSONResponse


def context(*scopes: str) -> Callable[..., Awaitable[service.Context]]:
    async def dependency(
        request: Request, principal: Annotated[Principal, Depends(require(*scopes))]
    ) -> service.Context:
        return service.Context(
            principal=principal, keyring=request.app.state.keyring, today=date.today()
        )

    return dependency


Caller = Annotated[service.Context, Depends(context("verification:request"))]


async def verifier(request: Request) -> Verifier:
    found: Verifier = request.app.state.verifier
    return found


VerifierDep = Annotated[Verifier, Depends(verifier)]


async def household_in(
    worker: Verifier, household_id: str, *, region: str | None, ctx: service.Context
) -> dict[str, Any]:
    """The household's masked file if it is filed in the caller's regions (and in `region`,
    when given); otherwise HouseholdUnknown, alike for one elsewhere and one that is not."""

    def allowed(code: str) -> bool:
        return ctx.principal.covers(code) and region in (None, code)

    try:
        return await worker.filed_household(household_id, inside=allowed)
    except HouseholdNotFound:
        raise service.HouseholdUnknown(household_id) from None


def json_response(body: Any, status_code: int = 200) -> JSONResponse:
    return FastJSONResponse(body, status_code=status_code)
