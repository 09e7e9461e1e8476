"""Decisions: cards and eligibility with their receipts, held households, re-derivation."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from services.benefits import store
from services.benefits.domain import card as cards
from services.benefits.domain import rules
from services.benefits.domain.events import (
    EligibilityDetermined,
    EntitlementsChanged,
    EntitlementsDetermined,
)
from services.benefits.domain.parameters import (
    Book,
    NoParameters,
    ParameterError,
    Value,
    value_from_dict,
)
from services.benefits.inputs import from_registry
from services.benefits.schemas import HouseholdIn
from services.benefits.service.context import (
    Context,
    DecisionNotFound,
    HouseholdNotKnown,
    check_day,
    check_region,
    envelope,
    result_digest,
)
from services.benefits.settings import BenefitsSettings
from shared.db import UnitOfWork
from shared.events.envelope import CloudEvent, new_event_id
from shared.registry_client import HouseholdNotFound, RegistryClient


async def _receipt(
    uow: UnitOfWork, ctx: Context, *, kind: str, household: HouseholdIn, card: cards.Card
) -> str:
    """Store the decision with everything needed to re-derive it: a receipt."""
    row = _receipt_row(ctx, kind=kind, household=household, card=card)
    await store.insert_decision(uow.session, row)
    return str(row["id"])


def _receipt_row(
    ctx: Context,
    *,
    kind: str,
    household: HouseholdIn,
    card: cards.Card,
    parameters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The receipt of `card`; `parameters` keeps the JSON of each parameter digest's values
    for the receipts of a batch (half of a card's JSON, the same for a region's cards)."""
    result = card.result() if kind == "card" else {"eligibility": card.result()["eligibility"]}
    return {
        "id": new_event_id(),
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
        "body": json_body(card, parameters),
        "decided_by": ctx.actor,
    }


def json_body(card: cards.Card, parameters: dict[str, Any] | None = None) -> Any:
    """The card in JSON types, as `dataclasses.asdict` then `json` would give it, without the
    deep copy asdict makes of every nested value: that copy was a third of deciding a card.
    `parameters` keeps the JSON of the card's parameter values by their digest (which hashes
    exactly those values) for the next card with the same."""
    body = _json_types(dataclasses.replace(card, parameters=[]))
    if parameters is None:
        parameters = {}
    if card.parameter_digest not in parameters:
        parameters[card.parameter_digest] = _json_types(card.parameters)
    body["parameters"] = parameters[card.parameter_digest]
    return body


def _json_types(value: Any) -> Any:
    # Unescaped: the same value back, and the Chinese of explanations read back faster.
    return json.loads(json.dumps(value, default=_fields_or_text, ensure_ascii=False))


def _fields_or_text(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    return str(value)


async def compute(
    uow: UnitOfWork, ctx: Context, household: HouseholdIn, *, on: date | None, kind: str = "card"
) -> tuple[str, cards.Card]:
    """Decide on inline inputs: the card (or eligibility) and its receipt; nothing published."""
    check_region(ctx, household.region)
    await check_household(uow, ctx, household.household_id)
    book = await ctx.engine.book(uow)
    card = _compute(book, household, on or ctx.today)
    return await _receipt(uow, ctx, kind=kind, household=household, card=card), card


def _compute(book: Book, household: HouseholdIn, on: date) -> cards.Card:
    return _compute_many(book, [household], on)[0]


def _compute_many(book: Book, households: Sequence[HouseholdIn], on: date) -> list[cards.Card]:
    try:
        return cards.compute_many(book, [h.to_domain() for h in households], on=on)
    except NoParameters as exc:
        raise ParameterError("-", "region", f"no parameter file covers region {exc}") from exc


async def stored_inputs(uow: UnitOfWork, household_id: str) -> HouseholdIn:
    """The household's latest inputs, with the latest verified income applied."""
    row = await store.get_household(uow.session, household_id)
    if row is None:
        raise HouseholdNotKnown(household_id)
    household = HouseholdIn.model_validate(row["facts"])
    verified = await store.get_verified_income(uow.session, household_id)
    return _with_verified(household, verified)


def _with_verified(household: HouseholdIn, verified: Mapping[str, Any] | None) -> HouseholdIn:
    """The inputs with the latest verified income (if any) applied."""
    if verified:
        household = household.model_copy(
            update={
                "verified_per_capita_income_fen": verified["per_capita_income_fen"],
                "verification_report_version": verified["report_version"],
            }
        )
    return household


async def held_inputs(uow: UnitOfWork, ctx: Context, household_id: str) -> HouseholdIn:
    """The stored inputs of a household in the caller's regions; another region's is not known."""
    household = await stored_inputs(uow, household_id)
    if not ctx.principal.covers(household.region):
        raise HouseholdNotKnown(household_id)
    return household


async def check_household(uow: UnitOfWork, ctx: Context, household_id: str | None) -> None:
    """A household id the caller names is not one this service knows in another region: held
    there, or (not held) with a verified income or income months from that region's events,
    which would answer on the caller's card. Answered as unknown, telling nothing of where."""
    if not household_id:
        return
    row = await store.get_household(uow.session, household_id)
    regions = {row["region"]} if row else await store.event_regions(uow.session, household_id)
    if not all(ctx.principal.covers(region) for region in regions):
        raise HouseholdNotKnown(household_id)


# Ages need birth dates, which beside the masked number are the number: pii:read, audited.
AGES_PURPOSE = "救助测算: 成员年龄"


async def fetch_household(
    settings: BenefitsSettings,
    household_id: str,
    *,
    on: date,
    within: Callable[[str], bool] | None = None,
) -> HouseholdIn | None:
    """The registry's file of the household as inputs; None when the registry has none, or
    when its region is not `within` (told by the masked file, before any audited read)."""
    client = RegistryClient.from_settings(settings)
    try:
        if within is not None:
            masked = await client.household(household_id)
            if not within(masked["location"]["region"]):
                return None
        file = await client.household(household_id, pii=True, purpose=AGES_PURPOSE)
        declarations = await client.declarations(household_id)
    except HouseholdNotFound:
        return None
    finally:
        await client.aclose()
    return from_registry(file, declarations, on=on)


async def fetch_households(
    settings: BenefitsSettings, household_ids: Sequence[str], *, on: date
) -> dict[str, HouseholdIn]:
    """The registry's files of many households as inputs, read in calls of up to a hundred;
    a household the registry has no file for is not in the answer."""
    if not household_ids:
        return {}
    client = RegistryClient.from_settings(settings)
    try:
        found = await client.households(
            household_ids, pii=True, purpose=AGES_PURPOSE, declarations=True
        )
    finally:
        await client.aclose()
    return {
        household_id: from_registry(file, found.declarations.get(household_id, []), on=on)
        for household_id, file in found.files.items()
    }


async def hold(
    uow: UnitOfWork, ctx: Context, household_id: str, *, settings: BenefitsSettings
) -> None:
    """Make sure the household's inputs are held: a file filed before this service ran is
    fetched from the registry on first request, if it lies in the caller's regions (a caller
    outside them causes no read of its numbers, and finds nothing)."""
    if not settings.follow_registry or await store.get_household(uow.session, household_id):
        return
    fetched = await fetch_household(
        settings, household_id, on=ctx.today, within=ctx.principal.covers
    )
    if fetched is not None:
        await put_household(uow, ctx, fetched)


async def put_household(uow: UnitOfWork, ctx: Context, household: HouseholdIn) -> None:
    """Hold new inputs, in the caller's regions, of a household not held in another."""
    check_region(ctx, household.region)
    assert household.household_id
    await check_household(uow, ctx, household.household_id)
    await store.put_household(
        uow.session, household.household_id, household.region, household.model_dump(mode="json")
    )


async def decide_household(
    uow: UnitOfWork,
    ctx: Context,
    household_id: str,
    *,
    on: date | None = None,
    purpose: str | None = None,
) -> tuple[str, cards.Card, bool]:
    """The stored household's card; published as determined (first) or changed (if it differs).
    A card of any day but today is a receipt only — not the current card, no event: a reader
    would otherwise flip the household's card by reading and have the suite publish it. A day
    that is not open (`check_day`) needs pii:read and is audited.

    Returns (decision id, card, whether an event was published).
    """
    household = await held_inputs(uow, ctx, household_id)
    day = on or ctx.today
    await check_day(
        uow,
        ctx,
        on=day,
        today=ctx.today,
        purpose=purpose,
        action="card.dated_read",
        target=household_id,
    )
    book = await ctx.engine.book(uow)
    card = _compute(book, household, day)
    decision_id = await _receipt(uow, ctx, kind="card", household=household, card=card)
    if day != ctx.today:
        return decision_id, card, False
    current = await store.get_current_card(uow.session, household_id)
    change = _card_change(household, decision_id, card, current)
    if change is None:
        return decision_id, card, False
    row, events = change
    await store.put_current_card(uow.session, row, exists=current is not None)
    uow.publish(*events)
    return decision_id, card, True


@dataclass(frozen=True)
class Filed:
    """A household's registry file to hold, and the trace of the event that brought it."""

    household: HouseholdIn
    traceparent: str | None


async def hold_and_decide(uow: UnitOfWork, ctx: Context, filed: Sequence[Filed]) -> None:
    """`put_household` then `decide_household` (today) of each of these distinct households,
    in order, with the same checks, rows and events as one by one, but in a few statements
    for all and the rules run once over them: a backlog's cost was per household statements
    and numpy calls on columns of one."""
    households = [f.household for f in filed]
    ids = [str(h.household_id) for h in households]
    if not all(ids) or len(set(ids)) != len(ids):
        raise ValueError("hold_and_decide takes distinct households with their ids")
    for household in households:
        check_region(ctx, household.region)
    held = await store.regions_of(uow.session, ids)
    unheld = [household_id for household_id in ids if household_id not in held]
    elsewhere = await store.event_regions_of(uow.session, unheld) if unheld else {}
    for household_id in ids:
        regions = {held[household_id]} if household_id in held else elsewhere.get(household_id)
        if not all(ctx.principal.covers(region) for region in regions or ()):
            raise HouseholdNotKnown(household_id)
    facts = [h.model_dump(mode="json") for h in households]
    await store.put_households(
        uow.session,
        [
            {"household_id": household_id, "region": h.region, "facts": fact}
            for household_id, h, fact in zip(ids, households, facts, strict=True)
        ],
        held=held.keys(),
    )
    # As `stored_inputs` reads them back: the held facts, with the latest verified income.
    verified = await store.verified_incomes(uow.session, ids)
    inputs = [
        _with_verified(HouseholdIn.model_validate(fact), verified.get(household_id))
        for household_id, fact in zip(ids, facts, strict=True)
    ]
    book = await ctx.engine.book(uow)
    decided = _compute_many(book, inputs, ctx.today)
    parameters: dict[str, Any] = {}
    receipts = [
        _receipt_row(ctx, kind="card", household=household, card=card, parameters=parameters)
        for household, card in zip(inputs, decided, strict=True)
    ]
    await store.insert_decisions(uow.session, receipts)
    current = await store.current_cards(uow.session, ids)
    rows = []
    for household, card, receipt, one in zip(inputs, decided, receipts, filed, strict=True):
        change = _card_change(
            household,
            str(receipt["id"]),
            card,
            current.get(str(household.household_id)),
            traceparent=one.traceparent,
        )
        if change is not None:
            rows.append(change[0])
            uow.publish(*change[1])
    if rows:
        await store.put_current_cards(uow.session, rows, held=current.keys())


def _card_change(
    household: HouseholdIn,
    decision_id: str,
    card: cards.Card,
    current: Mapping[str, Any] | None,
    *,
    traceparent: str | None = None,
) -> tuple[dict[str, Any], list[CloudEvent]] | None:
    """The household's new current-card row and the events that publish it, or None when
    today's card is the one last published."""
    household_id = str(household.household_id)
    digest = result_digest(card.result())
    if current and current["result_digest"] == digest:
        return None
    version = (current["version"] if current else 0) + 1
    row = {
        "household_id": household_id,
        "region": household.region,
        "decision_id": decision_id,
        "result_digest": digest,
        "version": version,
    }
    categories = [d.category for d in card.eligibility if d.applies]
    # A row holding only a 脱困 flag has no card yet: this one is the first.
    kind = EntitlementsChanged if current and current["decision_id"] else EntitlementsDetermined
    entitlements = kind(
        household_id=household_id,
        decision_id=decision_id,
        as_of=card.on.isoformat(),
        categories=categories,
        income_source=card.income_source,
        per_capita_income_fen=card.income_fen // max(card.members, 1),
        report_version=card.report_version,
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
                # "金额按当地标准": owed, amount set by the department (amount_fen 0 is not 0 yuan)
                "amount_note": m.amount_note,
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
    return row, [
        envelope(eligibility, region=household.region, sequence=version, traceparent=traceparent),
        envelope(entitlements, region=household.region, sequence=version, traceparent=traceparent),
    ]


async def eligibility_of(
    uow: UnitOfWork, ctx: Context, household_id: str, *, on: date | None, purpose: str | None
) -> tuple[str, cards.Card]:
    """The stored household's categories on a day (a day not open needs pii:read, audited)."""
    household = await held_inputs(uow, ctx, household_id)
    await check_day(
        uow,
        ctx,
        on=on or ctx.today,
        today=ctx.today,
        purpose=purpose,
        action="eligibility.dated_read",
        target=household_id,
    )
    return await compute(uow, ctx, household, on=on, kind="eligibility")


async def rederive(
    uow: UnitOfWork, ctx: Context, decision_id: str, *, purpose: str | None
) -> dict[str, Any]:
    """Re-run a stored decision on its stored inputs and parameters, and compare."""
    row = await _decision(uow, ctx, decision_id, purpose=purpose)
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


async def get_decision(
    uow: UnitOfWork, ctx: Context, decision_id: str, *, purpose: str | None
) -> dict[str, Any]:
    """A receipt of the caller's regions, its members' birth dates shown as years."""
    row = await _decision(uow, ctx, decision_id, purpose=purpose)
    return {**row, "inputs": _without_birth_dates(row["inputs"])}


async def _decision(
    uow: UnitOfWork, ctx: Context, decision_id: str, *, purpose: str | None
) -> dict[str, Any]:
    """A stored receipt of the caller's regions; another region's is not found. One dated on
    a day that was not open when it was made (neither that day nor a first of a month: made
    with pii:read, or inline) is read back as it was made, with pii:read and audited."""
    row = await store.get_decision(uow.session, decision_id)
    if row is None or not ctx.principal.covers(row["region"]):
        raise DecisionNotFound(decision_id)
    await check_day(
        uow,
        ctx,
        on=row["as_of"],
        today=row["decided_at"].date(),
        purpose=purpose,
        action="decision.dated_read",
        target=decision_id,
    )
    return row


def _without_birth_dates(inputs: dict[str, Any]) -> dict[str, Any]:
    """The inputs with each birth date as its year, as a masked registry file shows it.

    A birth date beside the masked identity number (region and check character) leaves ~45
    numbers to try; the receipt keeps it stored, for re-derivation, and never answers it. A
    reader who needs it reads the registry's file with pii:read, where the read is audited.
    """
    members = [
        {**m, "birth_date": None, "birth_year": date.fromisoformat(m["birth_date"]).year}
        for m in inputs["members"]
    ]
    return {**inputs, "members": members}
