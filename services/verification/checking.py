"""Ask every department about every member at once, within consent, and build the report.

This is the I/O edge between the department clients and the pure report: it never invents a
value — a department that cannot be asked or does not answer becomes an item that says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

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


async def check_person(
    person: Person,
    department: Department,
    client: DepartmentClient,
    *,
    purpose: str,
    on: date,
) -> ReportItem:
    """One member at one department: `ok` with findings, or the reason there are none."""
    source = f"{department.value}:{client.config.transport}"
    state, consent = consent_state(list(person.consents), department, on=on)
    if state is not ConsentState.VALID or consent is None:
        return ReportItem(
            person.member_id,
            department,
            ItemStatus.NO_CONSENT,
            source,
            reason=f"consent {state.value}",
        )
    query = Query(department.value, person.identity_number, consent.id, purpose)
    try:
        answer = await client.query(query)
        findings, as_of = to_findings(department, answer.body)
    except Unavailable as exc:
        return ReportItem(
            person.member_id,
            department,
            ItemStatus.UNAVAILABLE,
            source,
            reason=str(exc),
            request_hash=query.request_hash,
        )
    except (Refused, Malformed) as exc:
        return ReportItem(
            person.member_id,
            department,
            ItemStatus.ERROR,
            source,
            reason=str(exc),
            request_hash=query.request_hash,
        )
    return ReportItem(
        person.member_id,
        department,
        ItemStatus.OK,
        source,
        as_of=as_of,
        findings=findings,
        request_hash=query.request_hash,
    )


async def check_household(
    people: Sequence[Person],
    clients: Mapping[Department, DepartmentClient],
    *,
    departments: Sequence[Department],
    purpose: str,
    on: date,
) -> list[ReportItem]:
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
