"""The cross-department ledger and 重复救助."""

from __future__ import annotations

from typing import Any

from services.benefits import store
from services.benefits.domain.events import DuplicateDetected
from services.benefits.schemas import PaymentIn
from services.benefits.service.context import (
    Context,
    RegionNotAllowed,
    check_region,
    envelope,
)
from shared.db import UnitOfWork
from shared.events.envelope import new_event_id
from shared.regions import normalize_prefix


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
        uow.publish(envelope(event, region=body.region, sequence=0))
    return {"payment": payment, "duplicates": duplicates}


async def duplicates(uow: UnitOfWork, ctx: Context, *, region: str) -> list[dict[str, Any]]:
    prefix = normalize_prefix(region)
    if not any(r.startswith(prefix) or prefix.startswith(r) for r in ctx.principal.regions):
        raise RegionNotAllowed(region)
    rows = await store.duplicates_under(uow.session, prefix)
    return [r for r in rows if ctx.principal.covers(r["region"])]
