"""The cross-department ledger and 重复救助."""

from __future__ import annotations

from typing import Any

from services.benefits import store
from services.benefits.domain.events import DuplicateDetected
from services.benefits.schemas import PaymentIn
from services.benefits.service.context import Context, check_region, envelope
from services.benefits.service.decisions import check_household
from shared.db import UnitOfWork
from shared.events.envelope import new_event_id
from shared.regions import normalize_prefix


def _period(period: str) -> tuple[str, str]:
    return (period, period) if len(period) == 7 else (f"{period}-01", f"{period}-12")


async def post_payment(uow: UnitOfWork, ctx: Context, body: PaymentIn) -> dict[str, Any]:
    """Record what a department paid; report 重复救助 when the same need is already paid.

    A payment is known by its department's reference within its region: a department's name
    (民政局) is the same in every county, so another region's payment is never matched, neither
    as a re-sent one nor as an earlier payment of the need.
    """
    check_region(ctx, body.region)
    await check_household(uow, ctx, body.household_id)
    if body.reference:
        same = await store.find_payment(
            uow.session, region=body.region, department=body.department, reference=body.reference
        )
        if same:  # the department re-sent the same payment: not a second one
            return {"payment": same, "duplicates": []}
    start, end = _period(body.period)
    earlier = await store.overlapping_payments(
        uow.session,
        region=body.region,
        household_id=body.household_id,
        measure=body.measure,
        start=start,
        end=end,
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
    """The 重复救助 found under a region prefix, within the caller's regions (none outside)."""
    return await store.duplicates_under(
        uow.session, normalize_prefix(region), regions=ctx.principal.regions
    )
