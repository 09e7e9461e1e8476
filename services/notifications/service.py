"""The notifications service's use cases for messages: the engine turning occurrences into
messages, sending them, their status, the inbox. Each takes a unit of work, never commits it.

Webhook subscriptions and deliveries are in `webhooks.py`, follow-up and schedules in
`follow_up.py`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from services.notifications import store, webhooks
from services.notifications.domain.events import (
    NotificationFailed,
    NotificationReferral,
    NotificationSent,
)
from services.notifications.domain.rules import Intent, RuleBook, load_rulebook
from services.notifications.domain.sending import earliest_send
from services.notifications.settings import NotificationsSettings
from services.notifications.templates import Templates
from shared.auth import Principal
from shared.db import UnitOfWork, as_utc
from shared.events.envelope import CloudEvent, new_event, new_event_id
from shared.regions import region_in

RULES_FILE = Path(__file__).parent / "rules.yaml"


class MessageNotFound(Exception):
    """No such message, or not one the caller may see."""


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
        webhooks.delivery_row(
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
        if s["department"] == department and region_in(message["region"], s["regions"])
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
        "created_at": as_utc(row["created_at"]),
        "send_after": as_utc(row["not_before"]) if row["status"] == "queued" else None,
        "sent_at": as_utc(row["sent_at"]) if row["sent_at"] else None,
        "delivered_at": as_utc(row["delivered_at"]) if row["delivered_at"] else None,
        "read_at": as_utc(row["read_at"]) if row["read_at"] else None,
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
                recent_sends=[as_utc(r) for r in recent],
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
        raise webhooks.InvalidRequest("cause", "give a cause (event id) or a household_id")
    rows = await store.find_messages(
        uow.session,
        regions=principal.regions,
        cause=cause,
        household_id=household_id,
        limit=limit,
    )
    return [message_view(r) for r in rows]


async def message(uow: UnitOfWork, *, principal: Principal, message_id: str) -> dict[str, Any]:
    """One message of the caller's regions (another region's is not found, whoever it was to)."""
    row = await store.get_message(uow.session, message_id)
    if row is None or not principal.covers(row["region"]):
        raise MessageNotFound(message_id)
    return message_view(row)


async def inbox(
    uow: UnitOfWork, *, principal: Principal, unread: bool, limit: int
) -> dict[str, Any]:
    """The caller's in-app inbox (its client id is the recipient key: `helper:H001`), of its
    regions."""
    rows = await store.find_messages(
        uow.session,
        regions=principal.regions,
        recipient_key=principal.client_id,
        channel="inbox",
        unread=unread,
        limit=limit,
        newest_first=True,
    )
    unread_count = await store.unread_count(
        uow.session, principal.client_id, regions=principal.regions
    )
    return {"unread": unread_count, "items": [message_view(r) for r in rows]}


async def mark_read(
    uow: UnitOfWork, *, principal: Principal, message_id: str, read: bool, now: datetime
) -> dict[str, Any]:
    """Mark one of the caller's inbox messages read or unread."""
    if not await store.mark_read(
        uow.session,
        message_id,
        recipient_key=principal.client_id,
        regions=principal.regions,
        at=now if read else None,
    ):
        raise MessageNotFound(message_id)
    row = await store.get_message(uow.session, message_id)
    assert row is not None
    return message_view(row)
