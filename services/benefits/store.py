"""All of the benefits service's SQL."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Date,
    DateTime,
    Integer,
    String,
    Table,
    Text,
    bindparam,
    insert,
    select,
    union,
    union_all,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import new_metadata, region_condition

metadata = new_metadata()

# Values added through the admin API, on top of the shipped files; never updated or deleted,
# so the table is the history of who changed which standard when.
parameter_value = Table(
    "parameter_value",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("seq", Integer, nullable=False, unique=True),
    Column("region", String(6), nullable=False, index=True),
    Column("key", String(100), nullable=False),
    Column("value", JSON, nullable=False),
    Column("effective_from", Date, nullable=False),
    Column("effective_to", Date),
    Column("source", String(300), nullable=False),
    Column("document", String(100), nullable=False),
    Column("clause", String(200), nullable=False),
    Column("added_by", String(200), nullable=False),
    Column("added_at", DateTime(timezone=True), nullable=False),
)

# The latest inputs of each household (from the registry, or put by a department).
household_input = Table(
    "household_input",
    metadata,
    Column("household_id", String(64), primary_key=True),
    Column("region", String(6), nullable=False, index=True),
    Column("facts", JSON, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# The latest 核对报告 per household: its per-capita income wins over the declared one. The
# region is the event's (null for a row older than the column and of a household not held).
verified_income = Table(
    "verified_income",
    metadata,
    Column("household_id", String(64), primary_key=True),
    Column("region", String(6)),
    Column("report_version", Integer, nullable=False),
    Column("per_capita_income_fen", BigInteger, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
)

income_month = Table(
    "income_month",
    metadata,
    Column("household_id", String(64), primary_key=True),
    Column("month", String(7), primary_key=True),
    Column("region", String(6)),
    Column("income_fen", BigInteger, nullable=False),
    Column("member_count", Integer, nullable=False),
)

# Decision receipts: enough to re-derive each decision exactly on an objection (异议) or audit.
decision = Table(
    "decision",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("kind", String(20), nullable=False),  # card, eligibility
    Column("household_id", String(64), index=True),
    Column("region", String(6), nullable=False),
    Column("as_of", Date, nullable=False),
    Column("engine_version", String(50), nullable=False),
    Column("rule_digests", JSON, nullable=False),
    Column("parameter_digest", String(64), nullable=False),
    Column("parameters", JSON, nullable=False),
    Column("inputs", JSON, nullable=False),
    Column("result", JSON, nullable=False),
    Column("body", JSON, nullable=False),
    Column("decided_by", String(200), nullable=False),
    Column("decided_at", DateTime(timezone=True), nullable=False),
)

# The card last published for each household: a recomputation publishes only a change.
current_card = Table(
    "current_card",
    metadata,
    Column("household_id", String(64), primary_key=True),
    Column("region", String(6), nullable=False),
    Column("decision_id", String(36), nullable=False),
    Column("result_digest", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("exit_eligible_month", String(7)),
)

ledger_payment = Table(
    "ledger_payment",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("department", String(100), nullable=False),
    Column("measure", String(100), nullable=False),
    Column("household_id", String(64), nullable=False, index=True),
    Column("region", String(6), nullable=False),
    Column("period_start", String(7), nullable=False),
    Column("period_end", String(7), nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    Column("reference", String(100)),
    Column("posted_by", String(200), nullable=False),
    Column("posted_at", DateTime(timezone=True), nullable=False),
)

duplicate = Table(
    "duplicate",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("household_id", String(64), nullable=False, index=True),
    Column("region", String(6), nullable=False, index=True),
    Column("measure", String(100), nullable=False),
    Column("payment_id", String(36), nullable=False),
    Column("earlier_payment_id", String(36), nullable=False),
    Column("detail", Text, nullable=False),
    Column("detected_at", DateTime(timezone=True), nullable=False),
)


def _now() -> datetime:
    return datetime.now(UTC)


async def parameter_values(session: AsyncSession) -> list[dict[str, Any]]:
    rows = await session.execute(select(parameter_value).order_by(parameter_value.c.seq))
    return [dict(r) for r in rows.mappings()]


async def insert_parameter_value(session: AsyncSession, row: dict[str, Any]) -> None:
    last = (
        await session.execute(select(parameter_value.c.seq).order_by(parameter_value.c.seq.desc()))
    ).first()
    seq = (last[0] if last else 0) + 1
    await session.execute(insert(parameter_value).values(**row, seq=seq, added_at=_now()))


async def _upsert(
    session: AsyncSession, table: Table, key: dict[str, Any], values: dict[str, Any]
) -> None:
    """Insert, or update the row with this key: a concurrent insert of the same key (an event
    and a request about one household) turns into an update instead of failing."""
    try:
        async with session.begin_nested():
            await session.execute(insert(table).values(**key, **values))
    except IntegrityError:
        where = [table.c[name] == value for name, value in key.items()]
        await session.execute(update(table).where(*where).values(**values))


async def put_household(session: AsyncSession, household_id: str, region: str, facts: Any) -> None:
    await _upsert(
        session,
        household_input,
        {"household_id": household_id},
        {"region": region, "facts": facts, "updated_at": _now()},
    )


async def get_household(session: AsyncSession, household_id: str) -> dict[str, Any] | None:
    row = (
        (
            await session.execute(
                select(household_input).where(household_input.c.household_id == household_id)
            )
        )
        .mappings()
        .one_or_none()
    )
    return dict(row) if row else None


async def regions_of(session: AsyncSession, household_ids: Sequence[str]) -> dict[str, str]:
    """The region of each of these households that is held."""
    rows = await session.execute(
        select(household_input.c.household_id, household_input.c.region).where(
            household_input.c.household_id.in_(household_ids)
        )
    )
    return {str(row.household_id): str(row.region) for row in rows}


async def put_households(
    session: AsyncSession, rows: Sequence[dict[str, Any]], *, held: Collection[str]
) -> None:
    """Hold many households' inputs (`household_id`, `region`, `facts`): an update of each
    one in `held`, one insert of the others. A concurrent insert of one of them fails the
    statement (the caller's batch, handled again one by one, where `put_household` turns it
    into an update)."""
    now = _now()
    new = [{**row, "updated_at": now} for row in rows if row["household_id"] not in held]
    changed = [{f"b_{name}": value for name, value in row.items()} for row in rows]
    changed = [row for row in changed if row["b_household_id"] in held]
    if new:
        await session.execute(insert(household_input), new)
    if changed:
        await session.execute(
            update(household_input)
            .where(household_input.c.household_id == bindparam("b_household_id"))
            .values(region=bindparam("b_region"), facts=bindparam("b_facts"), updated_at=now),
            changed,
        )


async def households_under(session: AsyncSession, prefix: str) -> list[dict[str, Any]]:
    rows = await session.execute(
        select(household_input)
        .where(household_input.c.region.startswith(prefix))
        .order_by(household_input.c.household_id)
    )
    return [dict(r) for r in rows.mappings()]


async def put_verified_income(
    session: AsyncSession,
    household_id: str,
    *,
    region: str,
    report_version: int,
    per_capita_fen: int,
) -> bool:
    """Keep the newest report only; False when an older or equal version arrives."""
    current = await session.scalar(
        select(verified_income.c.report_version).where(
            verified_income.c.household_id == household_id
        )
    )
    values = {
        "region": region,
        "report_version": report_version,
        "per_capita_income_fen": per_capita_fen,
        "recorded_at": _now(),
    }
    if current is None:
        await session.execute(insert(verified_income).values(household_id=household_id, **values))
        return True
    if report_version <= current:
        return False
    await session.execute(
        update(verified_income)
        .where(verified_income.c.household_id == household_id)
        .values(**values)
    )
    return True


async def get_verified_income(session: AsyncSession, household_id: str) -> dict[str, Any] | None:
    row = (
        (
            await session.execute(
                select(verified_income).where(verified_income.c.household_id == household_id)
            )
        )
        .mappings()
        .one_or_none()
    )
    return dict(row) if row else None


async def verified_incomes(
    session: AsyncSession, household_ids: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """The verified income of each of these households that has one."""
    rows = await session.execute(
        select(verified_income).where(verified_income.c.household_id.in_(household_ids))
    )
    return {row["household_id"]: dict(row) for row in rows.mappings()}


async def put_income_month(
    session: AsyncSession,
    household_id: str,
    *,
    region: str,
    month: str,
    income_fen: int,
    member_count: int,
) -> None:
    await _upsert(
        session,
        income_month,
        {"household_id": household_id, "month": month},
        {"region": region, "income_fen": income_fen, "member_count": member_count},
    )


async def event_regions(session: AsyncSession, household_id: str) -> set[str]:
    """The regions that events gave the household's verified income and income months."""
    query = union(
        select(verified_income.c.region).where(verified_income.c.household_id == household_id),
        select(income_month.c.region).where(income_month.c.household_id == household_id),
    )
    return {region for (region,) in await session.execute(query) if region}


async def event_regions_of(
    session: AsyncSession, household_ids: Sequence[str]
) -> dict[str, set[str]]:
    """`event_regions` of each of these households (those without any are left out)."""
    query = union_all(
        select(verified_income.c.household_id, verified_income.c.region).where(
            verified_income.c.household_id.in_(household_ids)
        ),
        select(income_month.c.household_id, income_month.c.region).where(
            income_month.c.household_id.in_(household_ids)
        ),
    )
    found: dict[str, set[str]] = {}
    for household_id, region in await session.execute(query):
        if region:
            found.setdefault(household_id, set()).add(region)
    return found


async def income_months(session: AsyncSession, household_id: str) -> list[dict[str, Any]]:
    rows = await session.execute(
        select(income_month)
        .where(income_month.c.household_id == household_id)
        .order_by(income_month.c.month)
    )
    return [dict(r) for r in rows.mappings()]


async def insert_decision(session: AsyncSession, row: dict[str, Any]) -> None:
    await session.execute(insert(decision).values(**row, decided_at=_now()))


async def insert_decisions(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    now = _now()
    await session.execute(insert(decision), [{**row, "decided_at": now} for row in rows])


async def get_decision(session: AsyncSession, decision_id: str) -> dict[str, Any] | None:
    row = (
        (await session.execute(select(decision).where(decision.c.id == decision_id)))
        .mappings()
        .one_or_none()
    )
    return dict(row) if row else None


async def get_current_card(session: AsyncSession, household_id: str) -> dict[str, Any] | None:
    row = (
        (
            await session.execute(
                select(current_card).where(current_card.c.household_id == household_id)
            )
        )
        .mappings()
        .one_or_none()
    )
    return dict(row) if row else None


async def put_current_card(session: AsyncSession, row: dict[str, Any], *, exists: bool) -> None:
    if exists:
        await session.execute(
            update(current_card)
            .where(current_card.c.household_id == row["household_id"])
            .values(**row)
        )
    else:
        await session.execute(insert(current_card).values(**row))


async def current_cards(
    session: AsyncSession, household_ids: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """The current card row of each of these households that has one."""
    rows = await session.execute(
        select(current_card).where(current_card.c.household_id.in_(household_ids))
    )
    return {row["household_id"]: dict(row) for row in rows.mappings()}


async def put_current_cards(
    session: AsyncSession, rows: Sequence[dict[str, Any]], *, held: Collection[str]
) -> None:
    """`put_current_card` of many: an update of each one in `held`, one insert of the others."""
    new = [row for row in rows if row["household_id"] not in held]
    changed = [
        {f"b_{name}": value for name, value in row.items()}
        for row in rows
        if row["household_id"] in held
    ]
    if new:
        await session.execute(insert(current_card), new)
    if changed:
        names = [name for name in rows[0] if name != "household_id"]
        await session.execute(
            update(current_card)
            .where(current_card.c.household_id == bindparam("b_household_id"))
            .values({name: bindparam(f"b_{name}") for name in names}),
            changed,
        )


async def insert_payment(session: AsyncSession, row: dict[str, Any]) -> None:
    await session.execute(insert(ledger_payment).values(**row, posted_at=_now()))


async def overlapping_payments(
    session: AsyncSession, *, region: str, household_id: str, measure: str, start: str, end: str
) -> list[dict[str, Any]]:
    """Payments in the region for the same household and need whose periods overlap [start, end]."""
    rows = await session.execute(
        select(ledger_payment)
        .where(
            ledger_payment.c.region == region,
            ledger_payment.c.household_id == household_id,
            ledger_payment.c.measure == measure,
            ledger_payment.c.period_start <= end,
            ledger_payment.c.period_end >= start,
        )
        .order_by(ledger_payment.c.posted_at, ledger_payment.c.id)
    )
    return [dict(r) for r in rows.mappings()]


async def find_payment(
    session: AsyncSession, *, region: str, department: str, reference: str
) -> dict[str, Any] | None:
    row = (
        (
            await session.execute(
                select(ledger_payment).where(
                    ledger_payment.c.region == region,
                    ledger_payment.c.department == department,
                    ledger_payment.c.reference == reference,
                )
            )
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


async def insert_duplicate(session: AsyncSession, row: dict[str, Any]) -> None:
    await session.execute(insert(duplicate).values(**row, detected_at=_now()))


async def duplicates_under(
    session: AsyncSession, prefix: str, *, regions: Sequence[str]
) -> list[dict[str, Any]]:
    """The duplicates under `prefix` that lie inside `regions` (none when `regions` is empty)."""
    rows = await session.execute(
        select(duplicate)
        .where(
            region_condition(duplicate.c.region, [prefix]),
            region_condition(duplicate.c.region, regions),
        )
        .order_by(duplicate.c.detected_at, duplicate.c.id)
    )
    return [dict(r) for r in rows.mappings()]
