"""What every use case shares: the caller's context, the parameter engine, errors, envelopes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from services.benefits import store
from services.benefits.domain import card as cards
from services.benefits.domain.events import BenefitsEvent
from services.benefits.domain.parameters import (
    Book,
    Source,
    Value,
)
from shared import audit
from shared.auth import Principal
from shared.db import UnitOfWork
from shared.events.envelope import CloudEvent, new_event
from shared.observability import current_traceparent, trace_id_of
from shared.regions import normalize_prefix, parse_region

PII_READ = "pii:read"


class RegionNotAllowed(Exception):
    """The caller's token does not cover the region: answered as not found, like a missing thing."""


class HouseholdNotKnown(Exception):
    """No inputs are held for this household (put them, or let the registry's events bring them)."""


class DecisionNotFound(Exception):
    pass


class UnknownParameter(Exception):
    pass


class ScopeRequired(Exception):
    """The answer needs a scope the token lacks (`pii:read`)."""

    def __init__(self, scope: str) -> None:
        super().__init__(scope)
        self.scope = scope


class PurposeRequired(Exception):
    """An answer read with pii:read that does not say why."""

    def __init__(self) -> None:
        super().__init__(
            "a household's answer on a day other than today or the first of a month tells when "
            "a member crossed an age threshold, so it needs pii:read and the Bangfu-Purpose "
            "header (why, UTF-8 percent-encoded); it is kept in the audit log"
        )


class Engine:
    """The shipped parameter files with the admin's values on top, rebuilt when those change."""

    def __init__(self, files: Book):
        self.files = files
        self._cache: tuple[tuple[int, str], Book] | None = None

    async def book(self, uow: UnitOfWork) -> Book:
        rows = await store.parameter_values(uow.session)
        key = (len(rows), rows[-1]["id"] if rows else "")
        if self._cache and self._cache[0] == key:
            return self._cache[1]
        book = self.files
        for row in rows:
            book = book.with_value(stored_value(row))
        self._cache = (key, book)
        return book


@dataclass(frozen=True)
class Context:
    principal: Principal
    engine: Engine
    today: date
    profile: audit.Profile

    @property
    def actor(self) -> str:
        return self.principal.client_id


def check_region(ctx: Context, region: str) -> None:
    """The region lies inside the caller's regions."""
    parse_region(region)
    if not ctx.principal.covers(region):
        raise RegionNotAllowed(region)


def open_day(on: date, *, today: date) -> bool:
    """Today and the first of a month: the days anyone with benefits:read may date a household's
    answer. Answers on those days tell at most the month a member crossed an age threshold
    (65, 60, 18 …), which leaves over a thousand identity numbers beside the masked one; a
    day of the caller's choosing would find the birthday by halving (~9 cards, ~45 numbers)."""
    return on == today or on.day == 1


async def check_day(
    uow: UnitOfWork,
    ctx: Context,
    *,
    on: date,
    today: date,
    purpose: str | None,
    action: str,
    target: str,
) -> None:
    """A household's answer dated `on`: open on an `open_day`, else it needs pii:read and a
    purpose, and is audited (who, what, why, when) — as a clear read of the registry is."""
    if open_day(on, today=today):
        return
    if PII_READ not in ctx.principal.scopes:
        raise ScopeRequired(PII_READ)
    if not purpose:
        raise PurposeRequired()
    await audit.append(
        uow.session,
        client_id=ctx.actor,
        action=action,
        target=target,
        outcome="success",
        purpose=purpose,
        trace_id=trace_id_of(current_traceparent()),
        detail={"on": on.isoformat()},
        profile=ctx.profile,
        now=datetime.now(UTC),
    )


def check_level(ctx: Context, region: str) -> None:
    """The region lies inside the caller's regions or is a level above them (its city, its
    province), whose parameters apply to the caller's households too."""
    prefix = normalize_prefix(parse_region(region).code)
    if not any(r.startswith(prefix) or prefix.startswith(r) for r in ctx.principal.regions):
        raise RegionNotAllowed(region)


def stored_value(row: Mapping[str, Any]) -> Value:
    return Value(
        key=row["key"],
        value=row["value"],
        effective_from=row["effective_from"],
        effective_to=row["effective_to"],
        region=row["region"],
        source=Source(row["source"], row["document"]),
        clause=row["clause"],
        origin=f"admin:{row['added_by']}",
    )


def result_digest(result: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(result, sort_keys=True).encode()).hexdigest()


def envelope(
    event: BenefitsEvent, *, region: str, sequence: int, traceparent: str | None = None
) -> CloudEvent:
    """The event's envelope, in the trace of `traceparent` (else of what is being handled)."""
    return new_event(
        service="benefits",
        aggregate=event.aggregate,
        name=event.name,
        subject=event.household_id,
        region=region,
        sequence=sequence,
        data=dataclasses.asdict(event),
        traceparent=traceparent,
    )


def card_body(card: cards.Card, decision_id: str) -> dict[str, Any]:
    return {"decision_id": decision_id, **dataclasses.asdict(card)}
