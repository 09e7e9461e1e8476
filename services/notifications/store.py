"""All of the notifications service's SQL."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.expression import Select

from shared.db import insert_for, new_metadata, region_condition

metadata = new_metadata()

webhook_subscription = Table(
    "webhook_subscription",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("owner", String(200), nullable=False, index=True),
    Column("url", Text, nullable=False),
    Column("secret_cipher", Text, nullable=False),
    Column("event_types", JSON, nullable=False),
    Column("regions", JSON, nullable=False),
    # Set for a department's system: referrals to that department are delivered here.
    Column("department", String(32)),
    Column("status", String(16), nullable=False),  # active | paused | deleted
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

webhook_delivery = Table(
    "webhook_delivery",
    metadata,
    # The order deliveries were queued in: per (subscription, household) they go out in it.
    Column("position", Integer, primary_key=True, autoincrement=True),
    Column("id", String(36), nullable=False, unique=True),
    Column("subscription_id", String(36), nullable=False),
    Column("event_id", String(36), nullable=False),
    Column("event_type", String(200), nullable=False),
    Column("event_time", DateTime(timezone=True), nullable=False),
    Column("ordering_key", String(64), nullable=False),
    Column("region", String(6), nullable=False),
    Column("message_id", String(36)),
    Column("replay_of", String(36)),
    Column("body", Text, nullable=False),
    Column("status", String(16), nullable=False),  # pending | delivered | dead | cancelled
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("leased_until", DateTime(timezone=True)),
    Column("first_attempt_at", DateTime(timezone=True)),
    Column("last_status_code", Integer),
    Column("last_error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Index("ix_webhook_delivery_due", "status", "next_attempt_at"),
    Index("ix_webhook_delivery_queue", "subscription_id", "ordering_key", "status"),
    Index("ix_webhook_delivery_log", "subscription_id", "event_time"),
)

webhook_attempt = Table(
    "webhook_attempt",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("delivery_id", String(36), nullable=False, index=True),
    Column("attempt", Integer, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("status_code", Integer),
    Column("error", Text),
    Column("duration_ms", Integer, nullable=False),
)

message = Table(
    "message",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("recipient_kind", String(20), nullable=False),
    Column("recipient_id", String(100), nullable=False),
    Column("recipient_key", String(130), nullable=False),
    Column("channel", String(10), nullable=False),
    Column("template", String(50), nullable=False),
    Column("cause", String(200), nullable=False, index=True),
    Column("household_id", String(36), nullable=False, index=True),
    Column("region", String(6), nullable=False),
    Column("subject", Text),
    Column("body", Text, nullable=False),
    Column("status", String(12), nullable=False),  # queued | sent | delivered | failed
    Column("reason", Text),
    Column("not_before", DateTime(timezone=True), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("leased_until", DateTime(timezone=True)),
    Column("gateway_id", String(64)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True)),
    Column("delivered_at", DateTime(timezone=True)),
    Column("read_at", DateTime(timezone=True)),
    # Dedupe: one message per recipient, channel and cause, however often the cause recurs.
    UniqueConstraint("recipient_key", "channel", "cause"),
    Index("ix_message_due", "status", "not_before"),
    Index("ix_message_inbox", "recipient_key", "channel", "created_at"),
)

follow_up = Table(
    "follow_up",
    metadata,
    Column("household_id", String(36), primary_key=True),
    Column("region", String(6), nullable=False),
    Column("helper_id", String(64)),
    Column("status", String(12), nullable=False),  # applied | enrolled | exited
    Column("enrolled_on", Date),
    Column("last_visit_on", Date),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

schedule = Table(
    "schedule",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(20), nullable=False),
    Column("household_id", String(36), nullable=False),
    Column("period", String(10), nullable=False),
    Column("region", String(6), nullable=False),
    # When it fires next: a failed attempt moves it on by the backoff.
    Column("due_at", DateTime(timezone=True), nullable=False),
    Column("fired_at", DateTime(timezone=True)),
    Column("outcome", String(20)),  # sent | skipped | cancelled | failed
    Column("fired_by", String(100)),
    Column("attempts", Integer, nullable=False, server_default="0"),  # failed ones
    Column("reason", Text),  # why the last attempt failed
    UniqueConstraint("kind", "household_id", "period"),
    Index("ix_schedule_due", "fired_at", "due_at"),
)


def _insert_ignoring_conflicts(session: AsyncSession, table: Table) -> Any:
    """`INSERT … ON CONFLICT DO NOTHING` in either dialect."""
    return insert_for(session, table).on_conflict_do_nothing()


def _skip_locked(query: Select[Any]) -> Select[Any]:
    # PostgreSQL: concurrent replicas skip each other's claimed rows. SQLite ignores the clause;
    # its single writer (BEGIN IMMEDIATE) serialises the claims instead.
    return query.with_for_update(skip_locked=True)


# -- subscriptions ---------------------------------------------------------------------------


async def insert_subscription(session: AsyncSession, row: dict[str, Any]) -> None:
    await session.execute(insert(webhook_subscription).values(**row))


async def get_subscription(session: AsyncSession, subscription_id: str) -> dict[str, Any] | None:
    row = (
        (
            await session.execute(
                select(webhook_subscription).where(
                    webhook_subscription.c.id == subscription_id,
                    webhook_subscription.c.status != "deleted",
                )
            )
        )
        .mappings()
        .one_or_none()
    )
    return dict(row) if row else None


async def list_subscriptions(session: AsyncSession, *, owner: str | None) -> list[dict[str, Any]]:
    query = select(webhook_subscription).where(webhook_subscription.c.status != "deleted")
    if owner is not None:
        query = query.where(webhook_subscription.c.owner == owner)
    rows = await session.execute(query.order_by(webhook_subscription.c.created_at))
    return [dict(r) for r in rows.mappings()]


async def live_subscriptions(session: AsyncSession) -> list[dict[str, Any]]:
    """Active and paused subscriptions: a paused one still queues, it only does not send."""
    rows = await session.execute(
        select(webhook_subscription).where(webhook_subscription.c.status != "deleted")
    )
    return [dict(r) for r in rows.mappings()]


async def set_subscription_status(
    session: AsyncSession, subscription_id: str, *, status: str, now: datetime
) -> None:
    await session.execute(
        update(webhook_subscription)
        .where(webhook_subscription.c.id == subscription_id)
        .values(status=status, updated_at=now)
    )
    if status == "deleted":
        await session.execute(
            update(webhook_delivery)
            .where(
                webhook_delivery.c.subscription_id == subscription_id,
                webhook_delivery.c.status == "pending",
            )
            .values(status="cancelled", finished_at=now)
        )


# -- deliveries ------------------------------------------------------------------------------


async def insert_deliveries(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await session.execute(insert(webhook_delivery), list(rows))


async def claim_deliveries(
    session: AsyncSession, *, now: datetime, lease_until: datetime, limit: int
) -> list[dict[str, Any]]:
    """Lease due deliveries that head their household's queue, of active subscriptions.

    A delivery waits while an earlier one for the same subscription and household is pending
    (even if leased or backing off), so a household's events arrive in order.
    """
    earlier = webhook_delivery.alias("earlier")
    head = ~exists().where(
        earlier.c.subscription_id == webhook_delivery.c.subscription_id,
        earlier.c.ordering_key == webhook_delivery.c.ordering_key,
        earlier.c.status == "pending",
        earlier.c.position < webhook_delivery.c.position,
    )
    active = exists().where(
        webhook_subscription.c.id == webhook_delivery.c.subscription_id,
        webhook_subscription.c.status == "active",
    )
    query = (
        select(webhook_delivery)
        .where(
            webhook_delivery.c.status == "pending",
            webhook_delivery.c.next_attempt_at <= now,
            or_(webhook_delivery.c.leased_until.is_(None), webhook_delivery.c.leased_until < now),
            head,
            active,
        )
        .order_by(webhook_delivery.c.position)
        .limit(limit)
    )
    rows = [dict(r) for r in (await session.execute(_skip_locked(query))).mappings()]
    if rows:
        await session.execute(
            update(webhook_delivery)
            .where(webhook_delivery.c.position.in_([r["position"] for r in rows]))
            .values(leased_until=lease_until)
        )
    return rows


async def record_attempts(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await session.execute(insert(webhook_attempt), list(rows))


_OUTCOME_COLUMNS = (
    "status",
    "attempts",
    "first_attempt_at",
    "next_attempt_at",
    "leased_until",
    "last_status_code",
    "last_error",
    "finished_at",
)


async def record_outcomes(session: AsyncSession, outcomes: Sequence[dict[str, Any]]) -> None:
    """Write each attempted delivery's outcome in one executemany, keyed by `position`.

    A delivery cancelled (its subscription deleted) while it was in flight stays cancelled.
    """
    if not outcomes:
        return
    statement = (
        update(webhook_delivery)
        .where(
            webhook_delivery.c.position == bindparam("b_position"),
            webhook_delivery.c.status == "pending",
        )
        .values({name: bindparam(f"b_{name}") for name in _OUTCOME_COLUMNS})
    )
    await session.execute(
        statement,
        [{f"b_{name}": value for name, value in outcome.items()} for outcome in outcomes],
        execution_options={"synchronize_session": False},
    )


async def deliveries_of(
    session: AsyncSession,
    subscription_id: str,
    *,
    status: str | None = None,
    after: int = 0,
    limit: int = 100,
) -> list[dict[str, Any]]:
    query = select(webhook_delivery).where(
        webhook_delivery.c.subscription_id == subscription_id, webhook_delivery.c.position > after
    )
    if status:
        query = query.where(webhook_delivery.c.status == status)
    rows = await session.execute(query.order_by(webhook_delivery.c.position).limit(limit))
    return [dict(r) for r in rows.mappings()]


async def has_delivery(session: AsyncSession, subscription_id: str, delivery_id: str) -> bool:
    found = await session.execute(
        select(webhook_delivery.c.position).where(
            webhook_delivery.c.id == delivery_id,
            webhook_delivery.c.subscription_id == subscription_id,
        )
    )
    return found.first() is not None


async def attempts_of(session: AsyncSession, delivery_id: str) -> list[dict[str, Any]]:
    rows = await session.execute(
        select(webhook_attempt)
        .where(webhook_attempt.c.delivery_id == delivery_id)
        .order_by(webhook_attempt.c.attempt)
    )
    return [dict(r) for r in rows.mappings()]


async def deliveries_in_window(
    session: AsyncSession, subscription_id: str, *, since: datetime, until: datetime
) -> list[dict[str, Any]]:
    """The first delivery of each event in the window (not earlier replays), oldest first."""
    rows = await session.execute(
        select(webhook_delivery)
        .where(
            webhook_delivery.c.subscription_id == subscription_id,
            webhook_delivery.c.replay_of.is_(None),
            webhook_delivery.c.event_time >= since,
            webhook_delivery.c.event_time < until,
        )
        .order_by(webhook_delivery.c.position)
    )
    return [dict(r) for r in rows.mappings()]


async def message_deliveries_left(session: AsyncSession, message_id: str) -> dict[str, int]:
    rows = await session.execute(
        select(webhook_delivery.c.status, func.count())
        .where(webhook_delivery.c.message_id == message_id)
        .group_by(webhook_delivery.c.status)
    )
    return {str(status): int(count) for status, count in rows}


# -- messages --------------------------------------------------------------------------------


async def insert_message(session: AsyncSession, row: dict[str, Any]) -> bool:
    """Insert unless the recipient already has a message on this channel for this cause."""
    result = await session.execute(_insert_ignoring_conflicts(session, message).values(**row))
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def get_message(session: AsyncSession, message_id: str) -> dict[str, Any] | None:
    row = (
        (await session.execute(select(message).where(message.c.id == message_id)))
        .mappings()
        .one_or_none()
    )
    return dict(row) if row else None


async def find_messages(
    session: AsyncSession,
    *,
    regions: Sequence[str],
    cause: str | None = None,
    household_id: str | None = None,
    recipient_key: str | None = None,
    channel: str | None = None,
    unread: bool = False,
    limit: int = 100,
    newest_first: bool = False,
) -> list[dict[str, Any]]:
    """Messages inside the region prefixes (confined before the limit: a page is never short)."""
    query = select(message).where(region_condition(message.c.region, regions))
    if cause:
        query = query.where(message.c.cause == cause)
    if household_id:
        query = query.where(message.c.household_id == household_id)
    if recipient_key:
        query = query.where(message.c.recipient_key == recipient_key)
    if channel:
        query = query.where(message.c.channel == channel)
    if unread:
        query = query.where(message.c.read_at.is_(None))
    order = (
        (message.c.created_at.desc(), message.c.id.desc())
        if newest_first
        else (
            message.c.created_at,
            message.c.id,
        )
    )
    rows = await session.execute(query.order_by(*order).limit(limit))
    return [dict(r) for r in rows.mappings()]


async def claim_messages(
    session: AsyncSession, *, now: datetime, lease_until: datetime, limit: int
) -> list[dict[str, Any]]:
    """Lease queued messages whose time has come."""
    query = (
        select(message)
        .where(
            message.c.status == "queued",
            message.c.not_before <= now,
            or_(message.c.leased_until.is_(None), message.c.leased_until < now),
        )
        .order_by(message.c.not_before)
        .limit(limit)
    )
    rows = [dict(r) for r in (await session.execute(_skip_locked(query))).mappings()]
    if rows:
        await session.execute(
            update(message)
            .where(message.c.id.in_([r["id"] for r in rows]))
            .values(leased_until=lease_until)
        )
    return rows


async def sms_awaiting_report(session: AsyncSession, *, limit: int) -> list[dict[str, Any]]:
    rows = await session.execute(
        select(message)
        .where(message.c.channel == "sms", message.c.status == "sent")
        .order_by(message.c.sent_at)
        .limit(limit)
    )
    return [dict(r) for r in rows.mappings()]


async def recent_sms_to(session: AsyncSession, recipient_key: str, *, since: datetime) -> list[Any]:
    """When SMS were (or are planned to be) sent to a recipient since a moment."""
    rows = await session.execute(
        select(func.coalesce(message.c.sent_at, message.c.not_before)).where(
            message.c.recipient_key == recipient_key,
            message.c.channel == "sms",
            message.c.status != "failed",
            func.coalesce(message.c.sent_at, message.c.not_before) > since,
        )
    )
    return list(rows.scalars())


async def update_message(session: AsyncSession, message_id: str, **values: Any) -> None:
    await session.execute(update(message).where(message.c.id == message_id).values(**values))


async def mark_read(
    session: AsyncSession,
    message_id: str,
    *,
    recipient_key: str,
    regions: Sequence[str],
    at: datetime | None,
) -> bool:
    result = await session.execute(
        update(message)
        .where(
            message.c.id == message_id,
            message.c.recipient_key == recipient_key,
            message.c.channel == "inbox",
            region_condition(message.c.region, regions),
        )
        .values(read_at=at)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def unread_count(session: AsyncSession, recipient_key: str, *, regions: Sequence[str]) -> int:
    return int(
        (
            await session.execute(
                select(func.count()).where(
                    message.c.recipient_key == recipient_key,
                    message.c.channel == "inbox",
                    message.c.read_at.is_(None),
                    region_condition(message.c.region, regions),
                )
            )
        ).scalar_one()
    )


# -- follow-up and schedules ---------------------------------------------------------------


async def get_follow_up(session: AsyncSession, household_id: str) -> dict[str, Any] | None:
    row = (
        (await session.execute(select(follow_up).where(follow_up.c.household_id == household_id)))
        .mappings()
        .one_or_none()
    )
    return dict(row) if row else None


async def upsert_follow_up(
    session: AsyncSession, household_id: str, *, region: str, now: datetime, **values: Any
) -> None:
    """Create the household's follow-up row or update the given fields."""
    await session.execute(
        _insert_ignoring_conflicts(session, follow_up).values(
            household_id=household_id, region=region, status="applied", updated_at=now
        )
    )
    if values:
        await session.execute(
            update(follow_up)
            .where(follow_up.c.household_id == household_id)
            .values(**values, updated_at=now)
        )


async def add_schedules(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Store schedules; one already stored for the same kind, household and period is kept,
    unless it was cancelled (the household exited and came back): then it is due again."""
    for row in rows:
        statement = insert_for(session, schedule).values(**row)
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=["kind", "household_id", "period"],
                set_={
                    "due_at": statement.excluded.due_at,
                    "fired_at": None,
                    "outcome": None,
                    "fired_by": None,
                    "attempts": 0,
                    "reason": None,
                },
                where=schedule.c.outcome == "cancelled",
            )
        )


async def claim_due_schedules(
    session: AsyncSession, *, now: datetime, limit: int
) -> list[dict[str, Any]]:
    """Due, unfired schedules, locked until this transaction ends (skipped by other replicas)."""
    query = (
        select(schedule)
        .where(schedule.c.fired_at.is_(None), schedule.c.due_at <= now)
        .order_by(schedule.c.due_at, schedule.c.id)
        .limit(limit)
    )
    return [dict(r) for r in (await session.execute(_skip_locked(query))).mappings()]


async def mark_fired(
    session: AsyncSession, schedule_id: int, *, at: datetime, outcome: str, by: str
) -> None:
    await session.execute(
        update(schedule)
        .where(schedule.c.id == schedule_id, schedule.c.fired_at.is_(None))
        .values(fired_at=at, outcome=outcome, fired_by=by)
    )


async def retry_schedule(
    session: AsyncSession, schedule_id: int, *, due_at: datetime, reason: str
) -> None:
    """Count a failed attempt; the schedule is due again at `due_at`."""
    await session.execute(
        update(schedule)
        .where(schedule.c.id == schedule_id, schedule.c.fired_at.is_(None))
        .values(due_at=due_at, attempts=schedule.c.attempts + 1, reason=reason)
    )


async def fail_schedule(
    session: AsyncSession, schedule_id: int, *, at: datetime, reason: str, by: str
) -> None:
    """Count the last failed attempt: the schedule ends `failed` with the reason."""
    await session.execute(
        update(schedule)
        .where(schedule.c.id == schedule_id, schedule.c.fired_at.is_(None))
        .values(
            fired_at=at,
            outcome="failed",
            fired_by=by,
            attempts=schedule.c.attempts + 1,
            reason=reason,
        )
    )


async def cancel_schedules(session: AsyncSession, household_id: str, *, at: datetime) -> None:
    await session.execute(
        update(schedule)
        .where(schedule.c.household_id == household_id, schedule.c.fired_at.is_(None))
        .values(fired_at=at, outcome="cancelled", fired_by="exit")
    )


async def schedules_of(session: AsyncSession, household_id: str) -> list[dict[str, Any]]:
    rows = await session.execute(
        select(schedule)
        .where(schedule.c.household_id == household_id)
        .order_by(schedule.c.due_at, schedule.c.id)
    )
    return [dict(r) for r in rows.mappings()]


async def message_outcomes(session: AsyncSession) -> list[dict[str, Any]]:
    """How many messages stand at each channel, status and (for failures) reason."""
    rows = await session.execute(
        select(message.c.channel, message.c.status, message.c.reason, func.count())
        .where(message.c.status.in_(("sent", "delivered", "failed")))
        .group_by(message.c.channel, message.c.status, message.c.reason)
    )
    return [
        {"channel": channel, "status": status, "reason": reason, "count": count}
        for channel, status, reason, count in rows
    ]
