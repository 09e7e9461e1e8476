"""The verification service's HTTP routes and the one table mapping its errors to problem+json."""

from __future__ import annotations

from fastapi import APIRouter

from services.verification import service
from services.verification.api import consents, verifications
from services.verification.domain.events import EVENT_TYPES
from shared.events.schemas import schema_router
from shared.identity import InvalidIdentityNumber
from shared.problems import ErrorTable, Problem, invalid_field
from shared.regions import InvalidRegion
from shared.registry_client import RegistryUnavailable

router = APIRouter()
router.include_router(consents.router)
router.include_router(verifications.router)
router.include_router(schema_router("verification", "verification", EVENT_TYPES))


ERRORS: ErrorTable = {
    InvalidIdentityNumber: invalid_field("identity_number", "invalid-identity-number"),
    InvalidRegion: invalid_field("region"),
    service.InvalidConsent: invalid_field(None),
    service.RegionNotAllowed: lambda exc: Problem(
        403, "region-not-allowed", f"the token does not cover region {exc}"
    ),
    service.ConsentNotFound: lambda exc: Problem(404, "not-found", f"consent {exc} not found"),
    service.VerificationNotFound: lambda exc: Problem(
        404, "not-found", f"verification {exc} not found"
    ),
    service.BatchNotFound: lambda exc: Problem(404, "not-found", f"batch {exc} not found"),
    service.HouseholdUnknown: lambda exc: Problem(
        404, "household-not-found", f"household {exc} is not in the registry (or not yours)"
    ),
    service.NoConsent: lambda exc: Problem(
        403,
        "no-consent",
        "no valid consent (核对授权书) covers any member for any department asked: "
        "no department was called",
        members=exc.members,
    ),
    RegistryUnavailable: lambda exc: Problem(
        503, "registry-unavailable", "the registry did not answer; try again shortly"
    ),
}
