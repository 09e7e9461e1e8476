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
from functools import cached_property
from typing import Any

from services.verification.adapters.client import DepartmentClient
from services.verification.adapters.mappers import to_findings
from services.verification.adapters.transport import (
    Answer,
    Malformed,
    Outcome,
    Query,
    Refused,
    Unavailable,
)
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

    @cached_property  # asked three times a report: its item, the query log and the audit record
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
    (checked,) = await check_department([person], department, client, purpose=purpose, on=on)
    return checked


async def check_department(
    people: Sequence[Person],
    department: Department,
    client: DepartmentClient,
    *,
    purpose: str,
    on: date,
) -> list[Checked]:
    """Members at one department, in order: `ok` with findings, or the reason there are none.
    Those with a valid consent are asked together (as few requests as the client makes)."""
    source = f"{department.value}:{client.config.transport}"
    checked: list[Checked | None] = []
    asked: list[tuple[int, Person, Consent, Query]] = []
    for person in people:
        state, consent = consent_state(list(person.consents), department, on=on)
        if state is not ConsentState.VALID or consent is None:
            reason = f"consent {state.value}"
            item = ReportItem(
                person.member_id, department, ItemStatus.NO_CONSENT, source, reason=reason
            )
            checked.append(Checked(item, None))
        else:
            query = Query(department.value, person.identity_number, consent.id, purpose)
            asked.append((len(checked), person, consent, query))
            checked.append(None)
    if asked:
        started = time.perf_counter()
        outcomes = await client.query_many([query for *_, query in asked])
        seconds = time.perf_counter() - started
        for (n, person, consent, query), outcome in zip(asked, outcomes, strict=True):
            checked[n] = _checked(person, department, source, consent, query, outcome, seconds)
    return [c for c in checked if c is not None]


def _checked(
    person: Person,
    department: Department,
    source: str,
    consent: Consent,
    query: Query,
    outcome: Outcome,
    seconds: float,
) -> Checked:
    """The item and the exchange of one person's outcome."""
    raw = outcome.raw if isinstance(outcome, Answer) else None
    fields: dict[str, Any]
    if isinstance(outcome, Unavailable):
        status, fields = ItemStatus.UNAVAILABLE, {"reason": str(outcome)}
    elif isinstance(outcome, Refused | Malformed):
        status, fields = ItemStatus.ERROR, {"reason": str(outcome)}
    else:
        try:
            findings, as_of = to_findings(department, outcome.body)
        except Malformed as exc:
            status, fields = ItemStatus.ERROR, {"reason": str(exc)}
        else:
            status, fields = ItemStatus.OK, {"as_of": as_of, "findings": findings}
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
        seconds,
    )
    return Checked(item, exchange)


async def check_household(
    people: Sequence[Person],
    clients: Mapping[Department, DepartmentClient],
    *,
    departments: Sequence[Department],
    purpose: str,
    on: date,
) -> list[Checked]:
    """Every member at every department, concurrently (each client keeps its own limit); a
    department asked about the members together. Member by member, as they were given."""
    by_department = await asyncio.gather(
        *(
            check_department(people, department, clients[department], purpose=purpose, on=on)
            for department in departments
        )
    )
    return [answers[n] for n in range(len(people)) for answers in by_department]
