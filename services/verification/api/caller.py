"""Who is calling, as the routes see it: a principal with the service's keys and today."""

from collections.abc import Awaitable, Callable
from datetime import date
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from services.verification import service
from shared.auth import Principal, require


def context(*scopes: str) -> Callable[..., Awaitable[service.Context]]:
    async def dependency(
        request: Request, principal: Annotated[Principal, Depends(require(*scopes))]
    ) -> service.Context:
        return service.Context(
            principal=principal, keyring=request.app.state.keyring, today=date.today()
        )

    return dependency


Caller = Annotated[service.Context, Depends(context("verification:request"))]


def json_response(body: Any, status_code: int = 200) -> JSONResponse:
    return JSONResponse(jsonable_encoder(body), status_code=status_code)
