"""Ask every department about every member at once, within consent, and build the report.

This is the I/O edge between the department clients and the pure report: it never invents a
value — a department that cannot be asked or does not answer becomes an item that says so.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from services.verification.adapters.client import DepartmentClient
from services.verification.adapters.mappers import to_findings
from services.verification.adapters.transport import Malformed, Query, Refused, Unavailable
from services.verification.domain.consent import Consent, ConsentState, consent_state
from services.verification.domain.departments import Department
from services.verification.domain.report import ItemStatus, ReportItem


@dataclass(frozen=True)
class Person:
    member_id: str
    identity_number: str
    consents: tuple[Consent, ...]


@dataclass(frozen=True)
class Exchange:
    """One question put to a department and what came back: the evidence of a report item."""

    member_id: str
    department: Department
    consent_id: str
    request_hash: str
    outcome: ItemStatus
    at: datetime
    raw: bytes | None = None  # the department's answer as received, when there was one
    seconds: float = 0.0  # how long the department took (retries included)

    @property
    def response_digest(self) -> str | None:
        return hashlib.sha256(self.raw).hexdigest() if self.raw is not None else None


@dataclass(frozen=True)
class Checked:
    item: ReportItem
    exchange: Exchange | None  # None when the department was not asked (no consent)


async def check_person(
    person: Person,
    department: Department,
    client: DepartmentClient,
    *,
    purpose: str,
    on: date,
) -> Checked:
    """One member at one department: `ok` with findings, or the reason there are none."""
    source = f"{department.value}:{client.config.transport}"
    state, consent = consent_state(list(person.consents), department, on=on)
    if state is not ConsentState.VALID or consent is None:
        item = ReportItem(
            person.member_id,
            department,
            ItemStatus.NO_CONSENT,
            source,
            reason=f"consent {state.value}",
        )
        return Checked(item, None)
    query = Query(department.value, person.identity_number, consent.id, purpose)
    raw: bytes | None = None
    started = time.perf_counter()

    def checked(status: ItemStatus, **fields: Any) -> Checked:
        item = ReportItem(
            person.member_id, department, status, source, request_hash=query.request_hash, **fields
        )
        exchange = Exchange(
            person.member_id,
            department,
            consent.id,
            query.request_hash,
            status,
            datetime.now(UTC),
            raw,
            time.perf_counter() - started,
        )
        return Checked(item, exchange)

    try:
        answer = await client.query(query)
        raw = answer.raw
        findings, as_of = to_findings(department, answer.body)
    except Unavailable as exc:
        return checked(ItemStatus.UNAVAILABLE, reason=str(exc))
    except (Refused, Malformed) as exc:
        return checked(ItemStatus.ERROR, reason=str(exc))
    return checked(ItemStatus.OK, as_of=as_of, findings=findings)


async def check_household(
    people: Sequence[Person],
    clients: Mapping[Department, DepartmentClient],
    *,
    departments: Sequence[Department],
    purpose: str,
    on: date,
) -> list[Checked]:
    """Every member at every department, concurrently (each client keeps its own limit)."""
    return list(
        await asyncio.gather(
            *(
                check_person(person, department, clients[department], purpose=purpose, on=on)
                for person in people
                for department in departments
            )
        )
    )
