"""The registry's use cases: they take a unit of work, never commit it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from datetime import date, datetime
from typing import Any

from services.registry import store
from services.registry.domain.events import HouseholdEvent
from services.registry.domain.household import Household
from shared import audit
from shared.auth import Principal
from shared.crypto import Keyring, blind_index, decrypt, encrypt
from shared.db import UnitOfWork
from shared.events.envelope import CloudEvent, new_event, new_event_id
from shared.identity import mask_identity_number, parse_identity_number
from shared.observability import current_traceparent, trace_id_of
from shared.regions import parse_region

IDENTITY_CONTEXT = "household.head_identity"
PII_READ = "pii:read"


class HouseholdNotFound(Exception):
    """No such household, or not one the caller may see."""


class RegionNotAllowed(Exception):
    """The caller may not file households in this region."""


class PersonAlreadyFiled(Exception):
    """The person already heads a household (one person, one active household)."""

    def __init__(self, household_id: str, masked_identity: str):
        super().__init__(f"{masked_identity} already heads household {household_id}")
        self.household_id = household_id


def to_cloudevent(event: HouseholdEvent, *, region: str, sequence: int) -> CloudEvent:
    """Wrap a domain event in the integrators' envelope."""
    return new_event(
        service="registry",
        aggregate="household",
        name=event.name,
        subject=event.household_id,
        region=region,
        sequence=sequence,
        data=asdict(event),
    )


async def apply(
    uow: UnitOfWork,
    *,
    keyring: Keyring,
    principal: Principal,
    region: str,
    head_name: str,
    head_identity_number: str,
    today: date,
) -> Household:
    """File a new household at the applied step; emits household.applied."""
    parse_region(region)
    if not principal.covers(region):
        raise RegionNotAllowed(region)
    identity = parse_identity_number(head_identity_number, today=today)
    index = blind_index(keyring, identity.number, purpose="identity_number")
    existing = await store.find_by_identity_index(uow.session, index)
    if existing:
        raise PersonAlreadyFiled(existing, mask_identity_number(identity.number))
    household = Household.apply(
        household_id=new_event_id(),
        region=region,
        head_name=head_name,
        head_identity=identity,
        today=today,
    )
    await store.insert_household(
        uow.session,
        {
            "id": household.id,
            "region": household.region,
            "status": household.status.value,
            "version": household.version,
            "head_name": household.head_name,
            "head_identity_cipher": encrypt(keyring, identity.number, context=IDENTITY_CONTEXT),
            "head_identity_index": index,
            "head_identity_masked": mask_identity_number(identity.number),
        },
    )
    uow.publish(
        *(to_cloudevent(e, region=region, sequence=household.version) for e in household.events)
    )
    return household


def view(household: Household, *, principal: Principal) -> dict[str, Any]:
    """The household as just filed, for the caller that filed it (nothing read back)."""
    number = household.head_identity.number
    return _view(
        {
            "id": household.id,
            "region": household.region,
            "status": household.status.value,
            "version": household.version,
            "head_name": household.head_name,
        },
        identity=number if PII_READ in principal.scopes else mask_identity_number(number),
    )


async def get(
    uow: UnitOfWork,
    *,
    keyring: Keyring,
    principal: Principal,
    household_id: str,
    purpose: str | None,
    now: datetime,
) -> dict[str, Any]:
    """A household as the caller may see it; PII in clear only with pii:read, and audited."""
    row = await store.get_household(uow.session, household_id)
    if row is None or not principal.covers(str(row["region"])):
        raise HouseholdNotFound(household_id)
    if PII_READ not in principal.scopes:
        return _view(row, identity=str(row["head_identity_masked"]))
    identity = decrypt(keyring, str(row["head_identity_cipher"]), context=IDENTITY_CONTEXT)
    await audit.append(
        uow.session,
        client_id=principal.client_id,
        action="household.pii_read",
        target=household_id,
        outcome="success",
        purpose=purpose,
        trace_id=trace_id_of(current_traceparent()),
        detail={"fields": ["head.identity_number"]},
        profile=keyring.profile,
        now=now,
    )
    return _view(row, identity=identity)


def _view(row: Mapping[str, Any], *, identity: str) -> dict[str, Any]:
    return {
        "id": row["id"],
        "region": row["region"],
        "status": row["status"],
        "version": row["version"],
        "head": {"name": row["head_name"], "identity_number": identity},
    }
