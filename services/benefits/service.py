"""The benefits service's use cases: each takes a unit of work and never commits it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from services.benefits import store
from services.benefits.domain import card as cards
from services.benefits.domain import exit as exits
from services.benefits.domain import rules, whatif
from services.benefits.domain.events import (
    BenefitsEvent,
    DuplicateDetected,
    EligibilityDetermined,
    EntitlementsChanged,
    EntitlementsDetermined,
    ExitEligible,
)
from services.benefits.domain.facts import columns
from services.benefits.domain.parameters import (
    SPECS,
    Book,
    NoParameters,
    ParameterError,
    Source,
    Value,
    value_from_dict,
)
from services.benefits.inputs import from_registry
from services.benefits.schemas import HouseholdIn, ParameterIn, PaymentIn, WhatIfIn
from services.benefits.settings import BenefitsSettings
from shared.auth import Principal
from shared.db import UnitOfWork
from shared.events.envelope import CloudEvent, new_event, new_event_id
from shared.regions import normalize_prefix, parse_region
from shared.registry_client import HouseholdNotFound, RegistryClient


class RegionNotAllowed(Exception):
    """The caller's token does not cover the region."""


class HouseholdNotKnown(Exception):
    """No inputs are held for this household (put them, or let the registry's events bring them)."""


class DecisionNotFound(Exception):
    pass


class UnknownParameter(Exception):
    pass


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
            book = book.with_value(_value(row))
        self._cache = (key, book)
        return book


@dataclass(frozen=True)
class Context:
    principal: Principal
    engine: Engine
    today: date

    @property
    def actor(self) -> str:
        return self.principal.client_id


def check_region(ctx: Context, region: str) -> None:
    parse_region(region)
    if not ctx.principal.covers(region):
        raise RegionNotAllowed(region)


def _value(row: Mapping[str, Any]) -> Value:
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


def _digest(result: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(result, sort_keys=True).encode()).hexdigest()


def _event(event: BenefitsEvent, *, region: str, sequence: int) -> CloudEvent:
    return new_event(
        service="benefits",
        aggregate=event.aggregate,
        name=event.name,
        subject=event.household_id,
        region=region,
        sequence=sequence,
        data=dataclasses.asdict(event),
    )


def card_body(card: cards.Card, decision_id: str) -> dict[str, Any]:
    return {"decision_id": decision_id, **dataclasses.asdict(card)}


# -- decisions -----------------------------------------------------------------------------------


async def _receipt(
    uow: UnitOfWork, ctx: Context, *, kind: str, household: HouseholdIn, card: cards.Card
) -> str:
    """Store the decision with everything needed to re-derive it: a receipt."""
    decision_id = new_event_id()
    result = card.result() if kind == "card" else {"eligibility": card.result()["eligibility"]}
    await store.insert_decision(
        uow.session,
        {
            "id": decision_id,
            "kind": kind,
            "household_id": household.household_id,
            "region": household.region,
            "as_of": card.on,
            "engine_version": card.engine_version,
            "rule_digests": card.rule_digests,
            "parameter_digest": card.parameter_digest,
            "parameters": card.parameters,
            "inputs": household.model_dump(mode="json"),
            "result": result,
            "body": json.loads(json.dumps(dataclasses.asdict(card), default=str)),
            "decided_by": ctx.actor,
        },
    )
    return decision_id


async def compute(
    uow: UnitOfWork, ctx: Context, household: HouseholdIn, *, on: date | None, kind: str = "card"
) -> tuple[str, cards.Card]:
    """Decide on inline inputs: the card (or eligibility) and its receipt; nothing published."""
    check_region(ctx, household.region)
    book = await ctx.engine.book(uow)
    card = _compute(book, household, on or ctx.today)
    return await _receipt(uow, ctx, kind=kind, household=household, card=card), card


def _compute(book: Book, household: HouseholdIn, on: date) -> cards.Card:
    try:
        return cards.compute(book, household.to_domain(), on=on)
    except NoParameters as exc:
        raise ParameterError("-", "region", f"no parameter file covers region {exc}") from exc


async def stored_inputs(uow: UnitOfWork, household_id: str) -> HouseholdIn:
    """The household's latest inputs, with the latest verified income applied."""
    row = await store.get_household(uow.session, household_id)
    if row is None:
        raise HouseholdNotKnown(household_id)
    household = HouseholdIn.model_validate(row["facts"])
    verified = await store.get_verified_income(uow.session, household_id)
    if verified:
        household = household.model_copy(
            update={
                "verified_per_capita_income_fen": verified["per_capita_income_fen"],
                "verification_report_version": verified["report_version"],
            }
        )
    return household


async def fetch_household(
    settings: BenefitsSettings, household_id: str, *, on: date
) -> HouseholdIn | None:
    """The registry's file of the household as inputs; None when the registry has none."""
    client = RegistryClient.from_settings(settings)
    try:
        file = await client.household(household_id)
        declarations = await client.declarations(household_id)
    except HouseholdNotFound:
        return None
    finally:
        await client.aclose()
    return from_registry(file, declarations, on=on)


async def hold(
    uow: UnitOfWork, ctx: Context, household_id: str, *, settings: BenefitsSettings
) -> None:
    """Make sure the household's inputs are held: a file filed before this service ran is
    fetched from the registry on first request."""
    if not settings.follow_registry or await store.get_household(uow.session, household_id):
        return
    fetched = await fetch_household(settings, household_id, on=ctx.today)
    if fetched is not None:
        await put_household(uow, ctx, fetched)


async def put_household(uow: UnitOfWork, ctx: Context, household: HouseholdIn) -> None:
    check_region(ctx, household.region)
    assert household.household_id
    await store.put_household(
        uow.session, household.household_id, household.region, household.model_dump(mode="json")
    )


async def decide_household(
    uow: UnitOfWork, ctx: Context, household_id: str, *, on: date | None = None
) -> tuple[str, cards.Card, bool]:
    """The stored household's card; published as determined (first) or changed (if it differs).

    Returns (decision id, card, whether an event was published).
    """
    household = await stored_inputs(uow, household_id)
    check_region(ctx, household.region)
    book = await ctx.engine.book(uow)
    card = _compute(book, household, on or ctx.today)
    decision_id = await _receipt(uow, ctx, kind="card", household=household, card=card)
    current = await store.get_current_card(uow.session, household_id)
    digest = _digest(card.result())
    if current and current["result_digest"] == digest:
        return decision_id, card, False
    version = (current["version"] if current else 0) + 1
    await store.put_current_card(
        uow.session,
        {
            "household_id": household_id,
            "region": household.region,
            "decision_id": decision_id,
            "result_digest": digest,
            "version": version,
        },
        exists=current is not None,
    )
    categories = [d.category for d in card.eligibility if d.applies]
    kind = EntitlementsChanged if current else EntitlementsDetermined
    entitlements = kind(
        household_id=household_id,
        decision_id=decision_id,
        as_of=card.on.isoformat(),
        categories=categories,
        income_source=card.income_source,
        monthly_fen=card.monthly_fen,
        yearly_fen=card.yearly_fen,
        measures=[
            {
                "code": m.code,
                "name": m.name,
                "department": m.department,
                "period": m.period,
                "amount_fen": m.amount_fen,
                "quantity": m.quantity,
                "unit": m.unit,
            }
            for m in card.measures
        ],
    )
    eligibility = EligibilityDetermined(
        household_id=household_id,
        decision_id=decision_id,
        as_of=card.on.isoformat(),
        categories=categories,
    )
    uow.publish(
        _event(eligibility, region=household.region, sequence=version),
        _event(entitlements, region=household.region, sequence=version),
    )
    return decision_id, card, True


async def eligibility_of(
    uow: UnitOfWork, ctx: Context, household_id: str, *, on: date | None
) -> tuple[str, cards.Card]:
    household = await stored_inputs(uow, household_id)
    return await compute(uow, ctx, household, on=on, kind="eligibility")


async def rederive(uow: UnitOfWork, ctx: Context, decision_id: str) -> dict[str, Any]:
    """Re-run a stored decision on its stored inputs and parameters, and compare."""
    row = await store.get_decision(uow.session, decision_id)
    if row is None:
        raise DecisionNotFound(decision_id)
    check_region(ctx, row["region"])
    values = [value_from_dict(v) for v in row["parameters"]]
    levels: dict[str, dict[str, tuple[Value, ...]]] = {}
    for v in values:
        levels.setdefault(v.region, {})[v.key] = (v,)
    household = HouseholdIn.model_validate(row["inputs"])
    card = _compute(Book(levels=levels, names=ctx.engine.files.names), household, row["as_of"])
    result = (
        card.result() if row["kind"] == "card" else {"eligibility": card.result()["eligibility"]}
    )
    current = rules.rule_digests()
    return {
        "decision_id": decision_id,
        "matches": result == row["result"],
        "stored": row["result"],
        "rederived": result,
        "engine_version": {"stored": row["engine_version"], "current": rules.ENGINE_VERSION},
        "parameter_digest_matches": card.parameter_digest == row["parameter_digest"],
        "rules_changed_since": sorted(
            code for code, digest in row["rule_digests"].items() if current.get(code) != digest
        ),
    }


async def get_decision(uow: UnitOfWork, ctx: Context, decision_id: str) -> dict[str, Any]:
    row = await store.get_decision(uow.session, decision_id)
    if row is None:
        raise DecisionNotFound(decision_id)
    check_region(ctx, row["region"])
    return row


# -- 脱困 ----------------------------------------------------------------------------------------


async def record_income(
    uow: UnitOfWork,
    *,
    household_id: str,
    region: str,
    month: str,
    income_fen: int,
    member_count: int,
    engine: Engine,
    today: date,
) -> exits.ExitStatus:
    """A month's income (from the registry's event): re-evaluate 脱困, publish when first met."""
    await store.put_income_month(
        uow.session, household_id, month=month, income_fen=income_fen, member_count=member_count
    )
    status = await _exit_status(uow, engine, household_id=household_id, region=region, on=today)
    if status.eligible and status.latest_month:
        current = await store.get_current_card(uow.session, household_id)
        if current is None or current["exit_eligible_month"] != status.latest_month:
            row: dict[str, Any] = {
                "household_id": household_id,
                "region": region,
                "decision_id": current["decision_id"] if current else "",
                "result_digest": current["result_digest"] if current else "",
                "version": (current["version"] if current else 0) + 1,
                "exit_eligible_month": status.latest_month,
            }
            await store.put_current_card(uow.session, row, exists=current is not None)
            event = ExitEligible(
                household_id=household_id,
                months_above=status.months_above,
                required=status.required,
                latest_month=status.latest_month,
            )
            uow.publish(_event(event, region=region, sequence=row["version"]))
    return status


async def _exit_status(
    uow: UnitOfWork, engine: Engine, *, household_id: str, region: str, on: date
) -> exits.ExitStatus:
    book = await engine.book(uow)
    series = [
        exits.MonthIncome(r["month"], r["income_fen"], r["member_count"])
        for r in await store.income_months(uow.session, household_id)
    ]
    return exits.evaluate(book, region=region, series=series, on=on)


async def exit_of(uow: UnitOfWork, ctx: Context, household_id: str) -> exits.ExitStatus:
    household = await stored_inputs(uow, household_id)
    check_region(ctx, household.region)
    return await _exit_status(
        uow, ctx.engine, household_id=household_id, region=household.region, on=ctx.today
    )


# -- parameters ----------------------------------------------------------------------------------


async def resolved_parameters(
    uow: UnitOfWork, ctx: Context, region: str, *, on: date | None
) -> dict[str, Any]:
    parse_region(region)
    book = await ctx.engine.book(uow)
    try:
        resolved = book.resolve(region, on or ctx.today)
    except NoParameters as exc:
        raise ParameterError("-", "region", f"no parameter file covers region {exc}") from exc
    return {
        "region": region,
        "on": resolved.on,
        "digest": resolved.digest(),
        "values": [resolved.values[k].as_dict() for k in sorted(resolved.values)],
    }


async def parameter_history(uow: UnitOfWork, ctx: Context, region: str, key: str) -> dict[str, Any]:
    if key not in SPECS:
        raise UnknownParameter(key)
    book = await ctx.engine.book(uow)
    added = [
        {**_value(r).as_dict(), "added_at": r["added_at"]}
        for r in await store.parameter_values(uow.session)
        if r["region"] == region and r["key"] == key
    ]
    return {
        "region": region,
        "key": key,
        "in_force": [v.as_dict() for v in book.history(region, key)],
        "shipped": [v.as_dict() for v in ctx.engine.files.history(region, key)],
        "added": added,
    }


async def add_parameter(
    uow: UnitOfWork, ctx: Context, *, region: str, key: str, body: ParameterIn
) -> dict[str, Any]:
    """Validate a dated value, keep it in the history, recompute every household it reaches."""
    check_region(ctx, region)
    if key not in SPECS:
        raise UnknownParameter(key)
    book = await ctx.engine.book(uow)
    value = Value(
        key=key,
        value=body.value,
        effective_from=body.effective_from,
        effective_to=body.effective_to,
        region=region,
        source=Source(body.source, body.document),
        clause=body.clause,
        origin=f"admin:{ctx.actor}",
    )
    book.with_value(value)  # raises ParameterError before anything is stored
    await store.insert_parameter_value(
        uow.session,
        {
            "id": new_event_id(),
            "region": region,
            "key": key,
            "value": body.value,
            "effective_from": body.effective_from,
            "effective_to": body.effective_to,
            "source": body.source,
            "document": body.document,
            "clause": body.clause,
            "added_by": ctx.actor,
        },
    )
    await uow.session.flush()
    recomputed, changed = await recompute(uow, ctx, prefix=normalize_prefix(region))
    return {"value": value.as_dict(), "recomputed": recomputed, "changed": changed}


async def recompute(uow: UnitOfWork, ctx: Context, *, prefix: str) -> tuple[int, int]:
    """Every held household under `prefix`, today; an event only where its card changed."""
    changed = 0
    rows = await store.households_under(uow.session, prefix)
    for row in rows:
        _, _, published = await decide_household(uow, ctx, row["household_id"])
        changed += published
    return len(rows), changed


# -- ledger (重复救助) ---------------------------------------------------------------------------


def _period(period: str) -> tuple[str, str]:
    return (period, period) if len(period) == 7 else (f"{period}-01", f"{period}-12")


async def post_payment(uow: UnitOfWork, ctx: Context, body: PaymentIn) -> dict[str, Any]:
    """Record what a department paid; report 重复救助 when the same need is already paid."""
    check_region(ctx, body.region)
    if body.reference:
        same = await store.find_payment(
            uow.session, department=body.department, reference=body.reference
        )
        if same:  # the department re-sent the same payment: not a second one
            return {"payment": same, "duplicates": []}
    start, end = _period(body.period)
    earlier = await store.overlapping_payments(
        uow.session, household_id=body.household_id, measure=body.measure, start=start, end=end
    )
    payment: dict[str, Any] = {
        "id": new_event_id(),
        "department": body.department,
        "measure": body.measure,
        "household_id": body.household_id,
        "region": body.region,
        "period_start": start,
        "period_end": end,
        "amount_fen": body.amount_fen,
        "reference": body.reference,
        "posted_by": ctx.actor,
    }
    await store.insert_payment(uow.session, payment)
    duplicates = []
    for other in earlier:
        detail = (
            f"重复救助:{other['department']}已就{body.measure}支付"
            f"{other['period_start']}至{other['period_end']},{body.department}又支付{body.period}"
        )
        dup = {
            "id": new_event_id(),
            "household_id": body.household_id,
            "region": body.region,
            "measure": body.measure,
            "payment_id": payment["id"],
            "earlier_payment_id": other["id"],
            "detail": detail,
        }
        await store.insert_duplicate(uow.session, dup)
        duplicates.append(dup)
        event = DuplicateDetected(
            household_id=body.household_id,
            measure=body.measure,
            payment_id=payment["id"],
            earlier_payment_id=other["id"],
            departments=[other["department"], body.department],
            period=body.period,
            amount_fen=body.amount_fen,
        )
        uow.publish(_event(event, region=body.region, sequence=0))
    return {"payment": payment, "duplicates": duplicates}


async def duplicates(uow: UnitOfWork, ctx: Context, *, region: str) -> list[dict[str, Any]]:
    prefix = normalize_prefix(region)
    if not any(r.startswith(prefix) or prefix.startswith(r) for r in ctx.principal.regions):
        raise RegionNotAllowed(region)
    rows = await store.duplicates_under(uow.session, prefix)
    return [r for r in rows if ctx.principal.covers(r["region"])]


# -- what-if -------------------------------------------------------------------------------------


async def what_if(uow: UnitOfWork, ctx: Context, body: WhatIfIn) -> dict[str, Any]:
    """The held households under `region` today and under the proposed value from its date."""
    check_region(ctx, body.region)
    if body.key not in SPECS:
        raise UnknownParameter(body.key)
    before = await ctx.engine.book(uow)
    proposed = Value(
        key=body.key,
        value=body.value,
        effective_from=body.effective_from,
        effective_to=None,
        region=body.region,
        source=Source("what-if"),
        clause="假设",
        origin="what-if",
    )
    after = before.with_value(proposed)
    rows = await store.households_under(uow.session, normalize_prefix(body.region))
    households = [(await stored_inputs(uow, r["household_id"])).to_domain() for r in rows]
    if not households:
        return {"households": 0}
    cols = columns(households, on=body.effective_from)
    result = whatif.diff(before, after, cols, on=body.effective_from, until=body.until or ctx.today)
    return dataclasses.asdict(result)
