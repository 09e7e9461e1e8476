"""The registry's HTTP routes and the table mapping its errors to problem+json."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Annotated
from urllib.parse import unquote

from fastapi import APIRouter, Depends, Header, Request, Response

from services.registry import service
from services.registry.domain.household import InvalidName
from services.registry.schemas import HouseholdIn, HouseholdOut
from shared.auth import Principal, require
from shared.crypto import Keyring
from shared.identity import InvalidIdentityNumber
from shared.problems import ErrorTable, Problem
from shared.regions import InvalidRegion
from shared.service import UnitOfWorkDep

router = APIRouter(prefix="/v1", tags=["households"])


def _invalid(field: str, type_: str = "invalid-input") -> Callable[[Exception], Problem]:
    """A 422 naming the field; `code` is the machine-readable reason where the error has one."""

    def to_problem(exc: Exception) -> Problem:
        error = {"field": field, "reason": str(exc), "code": getattr(exc, "reason", "invalid")}
        return Problem(422, type_, str(exc), errors=[error])

    return to_problem


ERRORS: ErrorTable = {
    InvalidIdentityNumber: _invalid("head.identity_number", "invalid-identity-number"),
    InvalidRegion: _invalid("region"),
    InvalidName: _invalid("head.name"),
    service.RegionNotAllowed: lambda exc: Problem(
        403, "region-not-allowed", f"the token does not cover region {exc}"
    ),
    service.HouseholdNotFound: lambda exc: Problem(404, "not-found", f"household {exc} not found"),
    service.PersonAlreadyFiled: lambda exc: Problem(
        409, "person-already-filed", str(exc), household_id=exc.household_id
    ),
}


def _keyring(request: Request) -> Keyring:
    keyring: Keyring = request.app.state.keyring
    return keyring


KeyringDep = Annotated[Keyring, Depends(_keyring)]


@router.post(
    "/households",
    status_code=201,
    response_model=HouseholdOut,
    summary="Apply: open a household's file (申请)",
)
async def apply(
    body: HouseholdIn,
    response: Response,
    uow: UnitOfWorkDep,
    keyring: KeyringDep,
    principal: Annotated[Principal, Depends(require("registry:write"))],
) -> dict[str, object]:
    household = await service.apply(
        uow,
        keyring=keyring,
        principal=principal,
        region=body.region,
        head_name=body.head.name,
        head_identity_number=body.head.identity_number,
        today=date.today(),
    )
    await uow.commit()
    shown = service.view(household, principal=principal)
    response.headers["Location"] = f"/v1/households/{household.id}"
    response.headers["ETag"] = f'"{household.version}"'
    return shown


@router.get(
    "/households/{household_id}", response_model=HouseholdOut, summary="One household's file"
)
async def get(
    household_id: str,
    response: Response,
    uow: UnitOfWorkDep,
    keyring: KeyringDep,
    principal: Annotated[Principal, Depends(require("registry:read"))],
    purpose: Annotated[
        str | None,
        Header(
            alias="Bangfu-Purpose",
            max_length=500,
            description="Why the caller reads the file (UTF-8, percent-encoded); "
            "recorded with every unmasked read",
        ),
    ] = None,
) -> dict[str, object]:
    shown = await service.get(
        uow,
        keyring=keyring,
        principal=principal,
        household_id=household_id,
        purpose=unquote(purpose) if purpose else None,
        now=datetime.now(UTC),
    )
    await uow.commit()  # the audit record of an unmasked read
    response.headers["ETag"] = f'"{shown["version"]}"'
    return shown
