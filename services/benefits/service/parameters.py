"""Parameters: what is in force, its history, and adding a dated value (with recomputation)."""

from __future__ import annotations

from datetime import date
from typing import Any

from services.benefits import store
from services.benefits.domain import card as cards
from services.benefits.domain import rules
from services.benefits.domain.facts import columns
from services.benefits.domain.parameters import (
    SPECS,
    NoParameters,
    ParameterError,
    Source,
    Value,
)
from services.benefits.schemas import ParameterIn
from services.benefits.service.context import (
    Context,
    UnknownParameter,
    check_level,
    check_region,
    result_digest,
    stored_value,
)
from services.benefits.service.decisions import decide_household, stored_inputs
from shared.db import UnitOfWork
from shared.events.envelope import new_event_id
from shared.regions import normalize_prefix


async def resolved_parameters(
    uow: UnitOfWork, ctx: Context, region: str, *, on: date | None
) -> dict[str, Any]:
    check_level(ctx, region)
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
    check_level(ctx, region)
    if key not in SPECS:
        raise UnknownParameter(key)
    book = await ctx.engine.book(uow)
    added = [
        {**stored_value(r).as_dict(), "added_at": r["added_at"]}
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
    """Every held household under `prefix`, today, by the batch path; the households whose
    card changed are then decided one by one (receipt, explanation, event)."""
    rows = await store.households_under(uow.session, prefix)
    if not rows:
        return 0, 0
    ids = [row["household_id"] for row in rows]
    households = [(await stored_inputs(uow, i)).to_domain() for i in ids]
    book = await ctx.engine.book(uow)
    cols = columns(households, on=ctx.today)
    result = rules.evaluate(cols, rules.params_for(book, cols, on=ctx.today, keys=rules.ALL_KEYS))
    changed = 0
    for household_id, now in zip(ids, cards.batch_results(result, households), strict=True):
        current = await store.get_current_card(uow.session, household_id)
        if current and current["result_digest"] == result_digest(now):
            continue
        _, _, published = await decide_household(uow, ctx, household_id)
        changed += published
    return len(rows), changed
