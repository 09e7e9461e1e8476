"""What-if over the held households."""

from __future__ import annotations

import dataclasses
from typing import Any

from services.benefits import store
from services.benefits.domain import whatif
from services.benefits.domain.facts import columns
from services.benefits.domain.parameters import (
    SPECS,
    Source,
    Value,
)
from services.benefits.schemas import WhatIfIn
from services.benefits.service.context import (
    Context,
    UnknownParameter,
    check_day,
    check_region,
)
from services.benefits.service.decisions import stored_inputs
from shared.db import UnitOfWork
from shared.regions import normalize_prefix


async def what_if(
    uow: UnitOfWork, ctx: Context, body: WhatIfIn, *, purpose: str | None
) -> dict[str, Any]:
    """The held households under `region` today and under the proposed value from its date.

    Its counts are the held households' cards on that date (a county may hold one): a date
    that is not open needs pii:read and is audited, as a card of that day is.
    """
    check_region(ctx, body.region)
    if body.key not in SPECS:
        raise UnknownParameter(body.key)
    await check_day(
        uow,
        ctx,
        on=body.effective_from,
        today=ctx.today,
        purpose=purpose,
        action="what_if.dated_read",
        target=body.region,
    )
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
