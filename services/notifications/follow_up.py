"""Follow-up: each household's state from the registry's events, its schedules, and firing them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

from services.notifications import store
from services.notifications.domain import schedule as schedules
from services.notifications.domain.rules import Occurrence, intents, short_type
from services.notifications.service import Engine, send
from services.notifications.webhooks import household_of
from shared.db import UnitOfWork
from shared.events.envelope import CloudEvent


async def on_event(uow: UnitOfWork, engine: Engine, event: CloudEvent) -> list[dict[str, Any]]:
    """Keep the household's follow-up state and schedules, then apply the rules."""
    short = short_type(event.type)
    if not short.startswith("registry.") and not event.data.get("household_id"):
        return []  # about no household (a verification of a lone person): nobody to follow
    household_id = household_of(event)
    now = datetime.now(UTC)
    if short.startswith("registry.household."):
        await _follow(uow, engine, event, short.rsplit(".", 1)[1], household_id, now=now)
    follow = await store.get_follow_up(uow.session, household_id)
    occurrence = Occurrence(
        short_type=short,
        cause=event.id,
        household_id=household_id,
        region=event.region,
        data=event.data,
        date=engine.local_date(event.time).isoformat(),
    )
    found = intents(engine.book, occurrence, helper_id=follow["helper_id"] if follow else None)
    return await send(uow, engine, found, now=now)


async def _follow(
    uow: UnitOfWork, engine: Engine, event: CloudEvent, name: str, household_id: str, *, now: Any
) -> None:
    session, data, region = uow.session, event.data, event.region
    await store.upsert_follow_up(session, household_id, region=region, now=now)
    if name == "enrolled":
        enrolled_on = date.fromisoformat(str(data["enrolled_on"]))
        await store.upsert_follow_up(
            session,
            household_id,
            region=region,
            now=now,
            status="enrolled",
            enrolled_on=enrolled_on,
        )
        settings = engine.settings
        due = schedules.visit_schedules(
            schedules.period_of(enrolled_on),
            reminder_days=settings.visit_reminder_days,
            overdue_days=settings.visit_overdue_days,
        )
        due.append(
            schedules.recheck_schedule(enrolled_on, interval_days=settings.recheck_interval_days)
        )
        await _schedule(uow, engine, due, household_id=household_id, region=region)
    elif name == "noticed":
        due = [schedules.notice_schedule(date.fromisoformat(str(data["notice_ends_on"])))]
        await _schedule(uow, engine, due, household_id=household_id, region=region)
    elif name == "helper_assigned":
        await store.upsert_follow_up(
            session, household_id, region=region, now=now, helper_id=str(data["helper_id"])
        )
    elif name == "visit_recorded":
        visited = date.fromisoformat(str(data["visited_on"]))
        follow = await store.get_follow_up(session, household_id)
        last = follow["last_visit_on"] if follow else None
        if last is None or visited > last:
            await store.upsert_follow_up(
                session, household_id, region=region, now=now, last_visit_on=visited
            )
    elif name == "exited":
        await store.upsert_follow_up(session, household_id, region=region, now=now, status="exited")
        await store.cancel_schedules(session, household_id, at=now)


async def _schedule(
    uow: UnitOfWork, engine: Engine, due: Sequence[schedules.Due], *, household_id: str, region: str
) -> None:
    await store.add_schedules(
        uow.session,
        [
            {
                "kind": d.kind,
                "household_id": household_id,
                "period": d.period,
                "region": region,
                "due_at": engine.fire_at(d.on),
            }
            for d in due
        ],
    )


async def fire(uow: UnitOfWork, engine: Engine, row: Mapping[str, Any], *, now: datetime) -> str:
    """Fire one due schedule: message whom the rules say, schedule the next; its outcome."""
    kind, household_id, period = row["kind"], row["household_id"], row["period"]
    follow = await store.get_follow_up(uow.session, household_id)
    settings = engine.settings
    if follow is None or (kind != schedules.NOTICE_ENDED and follow["status"] != "enrolled"):
        return "skipped"
    data: dict[str, Any] = {"period": period, "helper_id": follow["helper_id"]}
    if kind == schedules.VISIT_DUE:
        following = schedules.next_period(period)
        await _schedule(
            uow,
            engine,
            schedules.visit_schedules(
                following,
                reminder_days=settings.visit_reminder_days,
                overdue_days=settings.visit_overdue_days,
            ),
            household_id=household_id,
            region=row["region"],
        )
    if kind in (schedules.VISIT_DUE, schedules.VISIT_OVERDUE) and schedules.visited_in(
        period, follow["last_visit_on"]
    ):
        return "skipped"
    if kind == schedules.VISIT_OVERDUE:
        data["overdue_days"] = settings.visit_overdue_days
    elif kind == schedules.RECHECK_DUE:
        data["due_on"] = period
        await _schedule(
            uow,
            engine,
            [
                schedules.recheck_schedule(
                    date.fromisoformat(period), interval_days=settings.recheck_interval_days
                )
            ],
            household_id=household_id,
            region=row["region"],
        )
    elif kind == schedules.NOTICE_ENDED:
        data["notice_ends_on"] = period
    occurrence = Occurrence(
        short_type=f"schedule.{kind}",
        cause=f"{kind}:{household_id}:{period}",
        household_id=household_id,
        region=row["region"],
        data=data,
        date=engine.local_date(now).isoformat(),
    )
    await send(
        uow, engine, intents(engine.book, occurrence, helper_id=follow["helper_id"]), now=now
    )
    return "sent"
