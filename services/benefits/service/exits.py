"""脱困: the monthly income series and `benefits.exit.eligible`."""

from __future__ import annotations

from datetime import date
from typing import Any

from services.benefits import store
from services.benefits.domain import exit as exits
from services.benefits.domain.events import ExitEligible
from services.benefits.service.context import Context, Engine, envelope
from services.benefits.service.decisions import held_inputs
from shared.db import UnitOfWork


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
        uow.session,
        household_id,
        region=region,
        month=month,
        income_fen=income_fen,
        member_count=member_count,
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
            uow.publish(envelope(event, region=region, sequence=row["version"]))
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
    household = await held_inputs(uow, ctx, household_id)
    return await _exit_status(
        uow, ctx.engine, household_id=household_id, region=household.region, on=ctx.today
    )
