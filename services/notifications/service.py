"""The notifications service's use cases: each takes a unit of work and never commits it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from services.notifications import store
from services.notifications.domain import schedule as schedules
from services.notifications.domain.events import (
    NotificationFailed,
    NotificationReferral,
    NotificationSent,
)
from services.notifications.domain.rules import (
    Intent,
    Occurrence,
    RuleBook,
    intents,
    load_rulebook,
    short_type,
)
from services.notifications.domain.sending import earliest_send
from services.notifications.domain.webhooks import Filter
from services.notifications.settings import NotificationsSettings
from services.notifications.templates import Templates
from shared.auth import Principal
from shared.crypto import Keyring, encrypt
from shared.db import UnitOfWork
from shared.events.envelope import CloudEvent, new_event, new_event_id
from shared.regions import normalize_prefix

RULES_FILE = Path(__file__).parent / "rules.yaml"
SECRET_CONTEXT = "webhook.secret"


class SubscriptionNotFound(Exception):
    """No such subscription, or not the caller's."""


class MessageNotFound(Exception):
    """No such message, or not one the caller may see."""


class RegionNotAllowed(Exception):
    """A region filter outside the caller's regions."""


class InvalidRequest(ValueError):
    def __init__(self, field_name: str, reason: str):
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name


@dataclass(frozen=True)
class Engine:
    """What turns occurrences into messages: the rules, the templates and the settings."""

    settings: NotificationsSettings
    book: RuleBook
    templates: Templates

    @classmethod
    def from_settings(cls, settings: NotificationsSettings) -> Engine:
        raw = yaml.safe_load((settings.rules_file or RULES_FILE).read_text(encoding="utf-8"))
        return cls(settings=settings, book=load_rulebook(raw), templates=Templates())

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.settings.timezone)

    def local_date(self, moment: datetime) -> date:
        return moment.astimezone(self.zone).date()

    def fire_at(self, day: date) -> datetime:
        """The UTC moment a schedule for `day` fires (at the configured local hour)."""
        local = datetime.combine(day, time(self.settings.schedule_hour), tzinfo=self.zone)
        return local.astimezone(UTC)


def utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; every stored moment is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# -- webhook subscriptions -------------------------------------------------------------------


def subscription_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """A subscription as the API shows it: never its secret."""
    return {
        "id": row["id"],
        "url": row["url"],
        "event_types": row["event_types"],
        "regions": row["regions"],
        "department": row["department"],
        "status": row["status"],
        "created_at": utc(row["created_at"]),
        "updated_at": utc(row["updated_at"]),
    }


async def register_subscription(
    uow: UnitOfWork,
    *,
    principal: Principal,
    keyring: Keyring,
    url: str,
    secret: str,
    event_types: Sequence[str],
    regions: Sequence[str],
    department: str | None,
    now: datetime,
) -> dict[str, Any]:
    """Register a department system's webhook; its region filter stays inside the caller's."""
    prefixes = sorted({normalize_prefix(r) for r in regions}) or list(principal.regions)
    for prefix in prefixes:
        if not any(prefix.startswith(own) for own in principal.regions):
            raise RegionNotAllowed(prefix)
    if not event_types:
        raise InvalidRequest("event_types", "name at least one event type (patterns may use *)")
    row = {
        "id": new_event_id(),
        "owner": principal.client_id,
        "url": url,
        "secret_cipher": encrypt(keyring, secret, context=SECRET_CONTEXT),
        "event_types": sorted(set(event_types)),
        "regions": prefixes,
        "department": department,
        "status": "active",
        "created_at": now,
        "updated_at": now,
    }
    await store.insert_subscription(uow.session, row)
    return subscription_view(row)


async def list_subscriptions(uow: UnitOfWork, *, principal: Principal) -> list[dict[str, Any]]:
    rows = await store.list_subscriptions(uow.session, owner=principal.client_id)
    return [subscription_view(r) for r in rows]


async def own_subscription(
    uow: UnitOfWork, *, principal: Principal, subscription_id: str
) -> dict[str, Any]:
    row = await store.get_subscription(uow.session, subscription_id)
    if row is None or row["owner"] != principal.client_id:
        raise SubscriptionNotFound(subscription_id)
    return row


async def set_status(
    uow: UnitOfWork, *, principal: Principal, subscription_id: str, status: str, now: datetime
) -> dict[str, Any]:
    """Pause (deliveries keep queuing), resume (the queue drains) or delete (pending cancelled)."""
    row = await own_subscription(uow, principal=principal, subscription_id=subscription_id)
    await store.set_subscription_status(uow.session, subscription_id, status=status, now=now)
    return subscription_view({**row, "status": status, "updated_at": now})


def delivery_view(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "position": row["position"],
        "event_id": row["event_id"],
        "event_type": row["event_type"],
        "event_time": utc(row["event_time"]),
        "household_id": row["ordering_key"],
        "status": row["status"],
        "attempts": row["attempts"],
        "next_attempt_at": utc(row["next_attempt_at"]) if row["status"] == "pending" else None,
        "last_status_code": row["last_status_code"],
        "last_error": row["last_error"],
        "replay_of": row["replay_of"],
        "created_at": utc(row["created_at"]),
        "finished_at": utc(row["finished_at"]) if row["finished_at"] else None,
    }


async def delivery_log(
    uow: UnitOfWork,
    *,
    principal: Principal,
    subscription_id: str,
    status: str | None,
    after: int,
    limit: int,
) -> list[dict[str, Any]]:
    """The subscription's deliveries in queue order; `status=dead` lists its dead letters."""
    await own_subscription(uow, principal=principal, subscription_id=subscription_id)
    rows = await store.deliveries_of(
        uow.session, subscription_id, status=status, after=after, limit=limit
    )
    return [delivery_view(r) for r in rows]


async def delivery_attempts(
    uow: UnitOfWork, *, principal: Principal, subscription_id: str, delivery_id: str
) -> list[dict[str, Any]]:
    await own_subscription(uow, principal=principal, subscription_id=subscription_id)
    return [
        {
            "attempt": a["attempt"],
            "at": utc(a["at"]),
            "status_code": a["status_code"],
            "error": a["error"],
            "duration_ms": a["duration_ms"],
        }
        for a in await store.attempts_of(uow.session, delivery_id)
    ]


async def replay(
    uow: UnitOfWork,
    *,
    principal: Principal,
    subscription_id: str,
    since: datetime,
    until: datetime,
    history: Sequence[CloudEvent],
    now: datetime,
) -> int:
    """Queue again every event of a window of event times that the subscription wants.

    What it was sent (or dead-lettered) comes from its delivery log, referrals included;
    `history`, the streams' events of the window, adds those it never got. Oldest first.
    """
    row = await own_subscription(uow, principal=principal, subscription_id=subscription_id)
    if until <= since:
        raise InvalidRequest("until", "must be after since")
    wants = Filter(tuple(row["event_types"]), tuple(row["regions"]))
    logged = await store.deliveries_in_window(
        uow.session, subscription_id, since=since, until=until
    )
    known = {o["event_id"] for o in logged}
    again = [
        (
            utc(o["event_time"]),
            _delivery_row(
                subscription_id=subscription_id,
                event_id=o["event_id"],
                event_type=o["event_type"],
                event_time=utc(o["event_time"]),
                ordering_key=o["ordering_key"],
                region=o["region"],
                body=o["body"],
                now=now,
                message_id=None,
                replay_of=o["id"],
            ),
        )
        for o in logged
    ]
    again += [
        (
            event.time,
            _delivery_row(
                subscription_id=subscription_id,
                event_id=event.id,
                event_type=event.type,
                event_time=event.time,
                ordering_key=household_of(event),
                region=event.region,
                body=event.to_json().decode(),
                now=now,
                message_id=None,
                replay_of=event.id,
            ),
        )
        for event in history
        if event.id not in known and wants.wants(event_type=event.type, region=event.region)
    ]
    again.sort(key=lambda pair: pair[0])
    await store.insert_deliveries(uow.session, [delivery for _, delivery in again])
    return len(again)


def _delivery_row(
    *,
    subscription_id: str,
    event_id: str,
    event_type: str,
    event_time: datetime,
    ordering_key: str,
    region: str,
    body: str,
    now: datetime,
    message_id: str | None,
    replay_of: str | None = None,
) -> dict[str, Any]:
    return {
        "id": new_event_id(),
        "subscription_id": subscription_id,
        "event_id": event_id,
        "event_type": event_type,
        "event_time": event_time,
        "ordering_key": ordering_key,
        "region": region,
        "message_id": message_id,
        "replay_of": replay_of,
        "body": body,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }


def household_of(event: CloudEvent) -> str:
    """The ordering key of an event: its household (a verification's subject is the request)."""
    return str(event.data.get("household_id") or event.subject)


async def fan_out(uow: UnitOfWork, event: CloudEvent, *, now: datetime) -> int:
    """Queue a delivery of the event for every live subscription whose filter wants it."""
    wanting = [
        s["id"]
        for s in await store.live_subscriptions(uow.session)
        if Filter(tuple(s["event_types"]), tuple(s["regions"])).wants(
            event_type=event.type, region=event.region
        )
    ]
    if not wanting:
        return 0
    body = event.to_json().decode()
    await store.insert_deliveries(
        uow.session,
        [
            _delivery_row(
                subscription_id=subscription_id,
                event_id=event.id,
                event_type=event.type,
                event_time=event.time,
                ordering_key=household_of(event),
                region=event.region,
                body=body,
                now=now,
                message_id=None,
            )
            for subscription_id in wanting
        ],
    )
    return len(wanting)


async def queue_referral(
    uow: UnitOfWork, *, message: Mapping[str, Any], data: Mapping[str, Any], now: datetime
) -> int:
    """The webhook channel: a referral event to each live subscription of the department."""
    department = str(message["recipient_id"]).split(":", 1)[0]
    referral = NotificationReferral(
        message_id=message["id"],
        household_id=message["household_id"],
        department=department,
        department_name=str(data.get("department_name") or department),
        measures=tuple(data.get("measures", ())),
        text=str(data["text"]),
        cause=str(data["cause"]),
    )
    event = _event(
        referral, household_id=message["household_id"], region=message["region"], now=now
    )
    rows = [
        _delivery_row(
            subscription_id=s["id"],
            event_id=event.id,
            event_type=event.type,
            event_time=now,
            ordering_key=message["household_id"],
            region=message["region"],
            body=event.to_json().decode(),
            now=now,
            message_id=message["id"],
        )
        for s in await store.live_subscriptions(uow.session)
        if s["department"] == department
        and (not s["regions"] or any(message["region"].startswith(p) for p in s["regions"]))
    ]
    await store.insert_deliveries(uow.session, rows)
    return len(rows)


# -- messages --------------------------------------------------------------------------------


def message_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """A message and its delivery status (queued, sent, delivered, failed with a reason)."""
    return {
        "id": row["id"],
        "recipient": row["recipient_key"],
        "channel": row["channel"],
        "template": row["template"],
        "cause": row["cause"],
        "household_id": row["household_id"],
        "region": row["region"],
        "subject": row["subject"],
        "body": row["body"],
        "status": row["status"],
        "reason": row["reason"],
        "created_at": utc(row["created_at"]),
        "send_after": utc(row["not_before"]) if row["status"] == "queued" else None,
        "sent_at": utc(row["sent_at"]) if row["sent_at"] else None,
        "delivered_at": utc(row["delivered_at"]) if row["delivered_at"] else None,
        "read_at": utc(row["read_at"]) if row["read_at"] else None,
    }


def notification_event(row: Mapping[str, Any], *, name: str, now: datetime) -> CloudEvent:
    """`notification.sent` or `notification.failed`: ids and codes only, never a phone number."""
    fields: dict[str, Any] = {
        "message_id": row["id"],
        "household_id": row["household_id"],
        "channel": row["channel"],
        "template": row["template"],
        "recipient_kind": row["recipient_kind"],
        "recipient": row["recipient_id"] if row["recipient_kind"] != "household" else None,
        "cause": row["cause"],
    }
    payload = (
        NotificationFailed(**fields, reason=str(row.get("reason")))
        if name == "failed"
        else NotificationSent(**fields)
    )
    return _event(payload, household_id=row["household_id"], region=row["region"], now=now)


def _event(payload: Any, *, household_id: str, region: str, now: datetime) -> CloudEvent:
    return new_event(
        service="notifications",
        aggregate=payload.aggregate,
        name=payload.name,
        subject=household_id,
        region=region,
        sequence=0,
        data=asdict(payload),
        time=now,
    )


async def send(
    uow: UnitOfWork, engine: Engine, found: Sequence[Intent], *, now: datetime
) -> list[dict[str, Any]]:
    """Render and store the messages; a recipient already told about a cause is not told again.

    The inbox delivers at once; SMS waits for quiet hours and the recipient's daily limit;
    email and webhook go to the dispatcher.
    """
    created = []
    for intent in found:
        subject, body = engine.templates.render(intent.template, intent.channel, intent.context)
        not_before = now
        if intent.channel == "sms":
            settings = engine.settings
            recent = await store.recent_sms_to(
                uow.session, intent.recipient.key, since=now - timedelta(days=1)
            )
            not_before = earliest_send(
                now,
                recent_sends=[utc(r) for r in recent],
                per_day=settings.sms_per_recipient_per_day,
                quiet_start=settings.sms_quiet_start_hour,
                quiet_end=settings.sms_quiet_end_hour,
                zone=engine.zone,
            )
        inbox = intent.channel == "inbox"
        row: dict[str, Any] = {
            "id": new_event_id(),
            "recipient_kind": intent.recipient.kind,
            "recipient_id": intent.recipient.id,
            "recipient_key": intent.recipient.key,
            "channel": intent.channel,
            "template": intent.template,
            "cause": intent.cause,
            "household_id": intent.household_id,
            "region": intent.region,
            "subject": subject,
            "body": body,
            "status": "delivered" if inbox else "queued",
            "not_before": not_before,
            "attempts": 0,
            "created_at": now,
            "sent_at": now if inbox else None,
            "delivered_at": now if inbox else None,
            "reason": None,
        }
        if not await store.insert_message(uow.session, row):
            continue
        if intent.channel == "webhook":
            await _stash_referral_data(uow, row, intent)
        if inbox:
            uow.publish(notification_event(row, name="sent", now=now))
        created.append(row)
    return created


async def _stash_referral_data(uow: UnitOfWork, row: dict[str, Any], intent: Intent) -> None:
    """Queue the referral's deliveries now, in the same transaction as the message."""
    context = intent.context
    data = {
        "household_id": intent.household_id,
        "department_name": context.get("department_name"),
        "measures": context.get("measures", []),
        "text": row["body"],
        "cause": intent.cause,
    }
    queued = await queue_referral(uow, message=row, data=data, now=row["created_at"])
    if queued:
        values = {"status": "sent", "sent_at": row["created_at"]}
    else:
        values = {"status": "failed", "reason": "the department has no webhook subscription"}
    row.update(values)
    await store.update_message(uow.session, row["id"], **values)
    uow.publish(notification_event(row, name="sent" if queued else "failed", now=row["created_at"]))


async def messages_for(
    uow: UnitOfWork,
    *,
    principal: Principal,
    cause: str | None,
    household_id: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Messages by their cause (an event id) or household, inside the caller's regions."""
    if not cause and not household_id:
        raise InvalidRequest("cause", "give a cause (event id) or a household_id")
    rows = await store.find_messages(
        uow.session, cause=cause, household_id=household_id, limit=limit
    )
    return [message_view(r) for r in rows if principal.covers(r["region"])]


async def message(uow: UnitOfWork, *, principal: Principal, message_id: str) -> dict[str, Any]:
    row = await store.get_message(uow.session, message_id)
    if row is None or not (
        principal.covers(row["region"]) or row["recipient_key"] == principal.client_id
    ):
        raise MessageNotFound(message_id)
    return message_view(row)


async def inbox(
    uow: UnitOfWork, *, principal: Principal, unread: bool, limit: int
) -> dict[str, Any]:
    """The caller's in-app inbox: its client id is the recipient key (`helper:H001`)."""
    rows = await store.find_messages(
        uow.session,
        recipient_key=principal.client_id,
        channel="inbox",
        unread=unread,
        limit=limit,
        newest_first=True,
    )
    return {
        "unread": await store.unread_count(uow.session, principal.client_id),
        "items": [message_view(r) for r in rows],
    }


async def mark_read(
    uow: UnitOfWork, *, principal: Principal, message_id: str, read: bool, now: datetime
) -> dict[str, Any]:
    if not await store.mark_read(
        uow.session, message_id, recipient_key=principal.client_id, at=now if read else None
    ):
        raise MessageNotFound(message_id)
    row = await store.get_message(uow.session, message_id)
    assert row is not None
    return message_view(row)


# -- events and schedules --------------------------------------------------------------------


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
