"""Consents (核对授权书): record, find, read, revoke."""

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse

from services.verification import service
from services.verification.api.caller import Caller, VerifierDep, household_in, json_response
from services.verification.schemas import ID_PATTERN, ConsentIn, ConsentOut, ConsentSearch, RevokeIn
from shared.service import UnitOfWorkDep

router = APIRouter(prefix="/v1", tags=["consents"])


@router.post(
    "/consents",
    status_code=201,
    response_model=ConsentOut,
    summary="Record a signed consent (核对授权书) for one person",
)
async def record_consent(
    body: ConsentIn, uow: UnitOfWorkDep, ctx: Caller, worker: VerifierDep
) -> JSONResponse:
    if body.household_id is not None:
        # The household named must be filed in the consent's region (and so in the caller's).
        await household_in(worker, body.household_id, region=body.region, ctx=ctx)
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
    return json_response(consent, 201)


@router.post(
    "/consents/search",
    response_model=list[ConsentOut],
    summary="A person's consents (the number travels in the body, not the URL), or those "
    "recorded for a household's members",
)
async def find_consents(body: ConsentSearch, uow: UnitOfWorkDep, ctx: Caller) -> JSONResponse:
    if body.household_id is not None:
        return json_response(
            await service.household_consents(uow, ctx, household_id=body.household_id)
        )
    assert body.identity_number is not None  # the schema takes exactly one of the two
    return json_response(
        await service.find_consents(uow, ctx, identity_number=body.identity_number)
    )


@router.get("/consents/{consent_id}", response_model=ConsentOut, summary="One consent")
async def get_consent(
    consent_id: Annotated[str, Path(pattern=ID_PATTERN)], uow: UnitOfWorkDep, ctx: Caller
) -> JSONResponse:
    return json_response(await service.get_consent(uow, ctx, consent_id))


@router.post(
    "/consents/{consent_id}/revoke",
    response_model=ConsentOut,
    summary="Revoke a consent from a day on (default today)",
)
async def revoke_consent(
    consent_id: Annotated[str, Path(pattern=ID_PATTERN)],
    body: RevokeIn,
    uow: UnitOfWorkDep,
    ctx: Caller,
) -> JSONResponse:
    consent = await service.revoke_consent(
        uow, ctx, consent_id, reason=body.reason, revoked_on=body.revoked_on
    )
    await uow.commit()
    return json_response(consent)
