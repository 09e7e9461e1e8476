"""The registry's HTTP routes and the one table mapping its errors to problem+json."""

from __future__ import annotations

from fastapi import APIRouter

from services.registry import service
from services.registry.api import excel, households, reports, search
from services.registry.domain.events import EVENT_TYPES
from services.registry.domain.household import RuleBroken
from services.registry.domain.members import InvalidText
from services.registry.domain.workflow import StepNotAllowed
from shared.crypto import DecryptionError
from shared.events.schemas import schema_router
from shared.identity import InvalidIdentityNumber
from shared.problems import ErrorTable, Problem, invalid_field
from shared.regions import InvalidRegion

router = APIRouter()
router.include_router(households.router)
router.include_router(search.router)
router.include_router(reports.router)
router.include_router(excel.router)
router.include_router(schema_router("registry", "household", EVENT_TYPES))


ERRORS: ErrorTable = {
    InvalidIdentityNumber: invalid_field("members.identity_number", "invalid-identity-number"),
    InvalidRegion: invalid_field("location.region"),
    InvalidText: invalid_field(None),
    RuleBroken: invalid_field(None, "rule-broken"),
    StepNotAllowed: lambda exc: Problem(
        409,
        "step-not-allowed",
        str(exc),
        current_status=exc.status.value,
        allowed_steps=[s.value for s in exc.allowed],
    ),
    service.RegionNotAllowed: lambda exc: Problem(
        403, "region-not-allowed", f"the token does not cover region {exc}"
    ),
    service.MissingScope: lambda exc: Problem(
        403, "forbidden", str(exc), missing_scopes=[exc.scope]
    ),
    service.HouseholdNotFound: lambda exc: Problem(404, "not-found", f"household {exc} not found"),
    service.PersonAlreadyFiled: lambda exc: Problem(
        409, "person-already-filed", str(exc), household_id=exc.household_id
    ),
    service.PersonFiledElsewhere: lambda exc: Problem(
        409, "person-already-filed", str(exc), filed_in_province=exc.province
    ),
    service.PurposeRequired: lambda exc: Problem(400, "purpose-required", str(exc)),
    service.VersionMismatch: lambda exc: Problem(
        412,
        "precondition-failed",
        f"{exc}; fetch it again and retry",
        headers={"ETag": f'"{exc.current}"'},
    ),
    DecryptionError: lambda exc: Problem(
        500, "internal-error", "stored data failed its integrity check; it has been logged"
    ),
}
