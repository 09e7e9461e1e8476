"""The verification service's use cases: each takes a unit of work and never commits it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from services.verification import store
from services.verification.domain.consent import Consent
from services.verification.domain.departments import Department
from shared import audit
from shared.auth import Principal
from shared.crypto import Keyring, blind_index
from shared.db import UnitOfWork
from shared.events.envelope import new_event_id
from shared.identity import mask_identity_number, parse_identity_number
from shared.observability import current_traceparent, trace_id_of
from shared.regions import parse_region

INDEX_PURPOSE = "identity_number"


class ConsentNotFound(Exception):
    """No such consent, or not one the caller may see."""


class RegionNotAllowed(Exception):
    """The caller may not record consents for this region."""


class InvalidConsent(ValueError):
    def __init__(self, field_name: str, reason: str):
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name


@dataclass(frozen=True)
class Context:
    principal: Principal
    keyring: Keyring
    today: date

    @property
    def actor(self) -> str:
        return self.principal.client_id


def person_index(keyring: Keyring, identity_number: str, *, today: date) -> str:
    """The blind index a person's consents and queries are filed under."""
    number = parse_identity_number(identity_number, today=today).number
    return blind_index(keyring, number, purpose=INDEX_PURPOSE)


def to_consent(row: Mapping[str, Any]) -> Consent:
    return Consent(
        id=row["id"],
        person_index=row["person_index"],
        signed_by=row["signed_by"],
        signed_on=row["signed_on"],
        expires_on=row["expires_on"],
        departments=frozenset(Department(d) for d in row["departments"]),
        document_ref=row["document_ref"],
        revoked_on=row["revoked_on"],
    )


def view(row: Mapping[str, Any], *, today: date) -> dict[str, Any]:
    """A consent as the API shows it: the number masked, its state as of today."""
    consent = to_consent(row)
    # Any department it covers tells whether it is in force; NOT_COVERED cannot occur here.
    state = consent.state_for(next(iter(consent.departments)), on=today)
    return {
        "id": row["id"],
        "identity_number": row["identity_masked"],
        "region": row["region"],
        "household_id": row["household_id"],
        "signed_by": row["signed_by"],
        "signed_on": row["signed_on"],
        "expires_on": row["expires_on"],
        "departments": sorted(row["departments"]),
        "document_ref": row["document_ref"],
        "revoked_on": row["revoked_on"],
        "revoked_reason": row["revoked_reason"],
        "state": state.value,
    }


async def _audit(
    uow: UnitOfWork, ctx: Context, *, action: str, target: str, detail: dict[str, Any]
) -> None:
    await audit.append(
        uow.session,
        client_id=ctx.actor,
        action=action,
        target=target,
        outcome="success",
        trace_id=trace_id_of(current_traceparent()),
        detail=detail,
        profile=ctx.keyring.profile,
        now=datetime.now(UTC),
    )


async def record_consent(
    uow: UnitOfWork,
    ctx: Context,
    *,
    identity_number: str,
    region: str,
    household_id: str | None,
    signed_by: str,
    signed_on: date,
    expires_on: date,
    departments: list[Department],
    document_ref: str,
) -> dict[str, Any]:
    """File a signed 核对授权书; it is what lets departments be asked about the person."""
    parse_region(region)
    if not ctx.principal.covers(region):
        raise RegionNotAllowed(region)
    if signed_on > ctx.today:
        raise InvalidConsent("signed_on", "a consent cannot be signed in the future")
    if expires_on < signed_on:
        raise InvalidConsent("expires_on", "must not be before signed_on")
    number = parse_identity_number(identity_number, today=ctx.today).number
    consent_id = new_event_id()
    row: dict[str, Any] = {
        "id": consent_id,
        "person_index": blind_index(ctx.keyring, number, purpose=INDEX_PURPOSE),
        "identity_masked": mask_identity_number(number),
        "region": region,
        "household_id": household_id,
        "signed_by": signed_by.strip(),
        "signed_on": signed_on,
        "expires_on": expires_on,
        "departments": sorted(d.value for d in set(departments)),
        "document_ref": document_ref,
        "recorded_by": ctx.actor,
    }
    await store.insert_consent(uow.session, row)
    await _audit(
        uow,
        ctx,
        action="consent.recorded",
        target=consent_id,
        detail={
            "document_ref": document_ref,
            "departments": row["departments"],
            "expires_on": expires_on.isoformat(),
        },
    )
    return view({**row, "revoked_on": None, "revoked_reason": None}, today=ctx.today)


async def get_consent(uow: UnitOfWork, ctx: Context, consent_id: str) -> dict[str, Any]:
    row = await store.get_consent(uow.session, consent_id)
    if row is None or not ctx.principal.covers(row["region"]):
        raise ConsentNotFound(consent_id)
    return row


async def find_consents(
    uow: UnitOfWork, ctx: Context, *, identity_number: str
) -> list[dict[str, Any]]:
    """A person's consents inside the caller's regions."""
    index = person_index(ctx.keyring, identity_number, today=ctx.today)
    rows = await store.consents_of(uow.session, [index])
    return [view(r, today=ctx.today) for r in rows if ctx.principal.covers(r["region"])]


async def revoke_consent(
    uow: UnitOfWork, ctx: Context, consent_id: str, *, reason: str, revoked_on: date | None
) -> dict[str, Any]:
    """Withdraw a consent from a day on (today by default); earlier queries stay lawful."""
    row = await get_consent(uow, ctx, consent_id)
    on = revoked_on or ctx.today
    if row["revoked_on"] is not None:
        raise InvalidConsent("revoked_on", f"already revoked on {row['revoked_on']}")
    if on < row["signed_on"]:
        raise InvalidConsent("revoked_on", "must not be before the consent was signed")
    await store.revoke_consent(uow.session, consent_id, on=on, reason=reason)
    await _audit(
        uow,
        ctx,
        action="consent.revoked",
        target=consent_id,
        detail={"revoked_on": on.isoformat(), "reason": reason},
    )
    return view({**row, "revoked_on": on, "revoked_reason": reason}, today=ctx.today)
