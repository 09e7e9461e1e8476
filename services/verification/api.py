"""The verification service's HTTP routes and the table mapping its errors to problem+json."""

from collections.abc import Awaitable, Callable
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from services.verification import service
from services.verification.schemas import ConsentIn, ConsentOut, ConsentSearch, RevokeIn
from shared.auth import Principal, require
from shared.identity import InvalidIdentityNumber
from shared.problems import ErrorTable, Problem, invalid_field
from shared.regions import InvalidRegion
from shared.service import UnitOfWorkDep

router = APIRouter(prefix="/v1", tags=["consents"])


ERRORS: ErrorTable = {
    InvalidIdentityNumber: invalid_field("identity_number", "invalid-identity-number"),
    InvalidRegion: invalid_field("region"),
    service.InvalidConsent: invalid_field(None),
    service.RegionNotAllowed: lambda exc: Problem(
        403, "region-not-allowed", f"the token does not cover region {exc}"
    ),
    service.ConsentNotFound: lambda exc: Problem(404, "not-found", f"consent {exc} not found"),
}


def context(*scopes: str) -> Callable[..., Awaitable[service.Context]]:
    async def dependency(
        request: Request, principal: Annotated[Principal, Depends(require(*scopes))]
    ) -> service.Context:
        return service.Context(
            principal=principal, keyring=request.app.state.keyring, today=date.today()
        )

    return dependency


Caller = Annotated[service.Context, Depends(context("verification:request"))]


def _json(body: Any, status_code: int = 200) -> JSONResponse:
    return JSONResponse(jsonable_encoder(body), status_code=status_code)


@router.post(
    "/consents",
    status_code=201,
    response_model=ConsentOut,
    summary="Record a signed consent (核对授权书) for one person",
)
async def record_consent(body: ConsentIn, uow: UnitOfWorkDep, ctx: Caller) -> JSONResponse:
    consent = await service.record_consent(
        uow,
        ctx,
        identity_number=body.identity_number,
        region=body.region,
        household_id=body.household_id,
        signed_by=body.signed_by,
        signed_on=body.signed_on,
        expires_on=body.expires_on,
        departments=body.departments,
        document_ref=body.document_ref,
    )
    await uow.commit()
    return _json(consent, 201)


@router.post(
    "/consents/search",
    response_model=list[ConsentOut],
    summary="A person's consents (the number travels in the body, not the URL)",
)
async def find_consents(body: ConsentSearch, uow: UnitOfWorkDep, ctx: Caller) -> JSONResponse:
    return _json(await service.find_consents(uow, ctx, identity_number=body.identity_number))


@router.get("/consents/{consent_id}", response_model=ConsentOut, summary="One consent")
async def get_consent(consent_id: str, uow: UnitOfWorkDep, ctx: Caller) -> JSONResponse:
    row = await service.get_consent(uow, ctx, consent_id)
    return _json(service.view(row, today=ctx.today))


@router.post(
    "/consents/{consent_id}/revoke",
    response_model=ConsentOut,
    summary="Revoke a consent from a day on (default today)",
)
async def revoke_consent(
    consent_id: str, body: RevokeIn, uow: UnitOfWorkDep, ctx: Caller
) -> JSONResponse:
    consent = await service.revoke_consent(
        uow, ctx, consent_id, reason=body.reason, revoked_on=body.revoked_on
    )
    await uow.commit()
    return _json(consent)
