"""Webhook use cases: subscriptions, their delivery queue and log, fan-out and replay."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from services.notifications import store
from services.notifications.domain.destinations import DestinationPolicy, DestinationRefused
from services.notifications.domain.webhooks import Filter
from shared.auth import Principal
from shared.crypto import Keyring, encrypt
from shared.db import UnitOfWork, as_utc
from shared.events.envelope import CloudEvent, new_event_id
from shared.regions import normalize_prefix

SECRET_CONTEXT = "webhook.secret"


class SubscriptionNotFound(Exception):
    """No such subscription, or not the caller's."""


class DeliveryNotFound(Exception):
    """No such delivery in the subscription's log."""


class RegionNotAllowed(Exception):
    """A region filter outside the caller's regions."""


class InvalidRequest(ValueError):
    def __init__(self, field_name: str, reason: str):
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name


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
        "created_at": as_utc(row["created_at"]),
        "updated_at": as_utc(row["updated_at"]),
    }


async def register_subscription(
    uow: UnitOfWork,
    *,
    principal: Principal,
    keyring: Keyring,
    destinations: DestinationPolicy,
    url: str,
    secret: str,
    event_types: Sequence[str],
    regions: Sequence[str] | None,
    department: str | None,
    now: datetime,
) -> dict[str, Any]:
    """Register a department system's webhook: a destination the policy allows, and a region
    filter inside the caller's regions (omitted: all of them; no region at all is refused)."""
    try:
        destinations.check_url(url)
    except DestinationRefused as exc:
        raise InvalidRequest("url", str(exc)) from exc
    if regions is not None and not regions:
        raise InvalidRequest("regions", "name at least one region, or omit it for the token's")
    prefixes = sorted({normalize_prefix(r) for r in regions or principal.regions})
    if not prefixes:
        raise InvalidRequest("regions", "the token covers no region: nothing would be delivered")
    for prefix in prefixes:
        if not _covered(prefix, principal):
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


def _covered(prefix: str, principal: Principal) -> bool:
    """A region prefix inside the caller's regions (`4113` is inside `41`)."""
    return any(prefix.startswith(own) for own in principal.regions)


def _visible(row: Mapping[str, Any], principal: Principal) -> bool:
    """The caller's own subscription, every region of it inside the caller's regions."""
    return row["owner"] == principal.client_id and all(
        _covered(prefix, principal) for prefix in row["regions"]
    )


async def list_subscriptions(uow: UnitOfWork, *, principal: Principal) -> list[dict[str, Any]]:
    rows = await store.list_subscriptions(uow.session, owner=principal.client_id)
    return [subscription_view(r) for r in rows if _visible(r, principal)]


async def own_subscription(
    uow: UnitOfWork, *, principal: Principal, subscription_id: str
) -> dict[str, Any]:
    row = await store.get_subscription(uow.session, subscription_id)
    if row is None or not _visible(row, principal):
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
        "event_time": as_utc(row["event_time"]),
        "household_id": row["ordering_key"],
        "status": row["status"],
        "attempts": row["attempts"],
        "next_attempt_at": as_utc(row["next_attempt_at"]) if row["status"] == "pending" else None,
        "last_status_code": row["last_status_code"],
        "last_error": row["last_error"],
        "replay_of": row["replay_of"],
        "created_at": as_utc(row["created_at"]),
        "finished_at": as_utc(row["finished_at"]) if row["finished_at"] else None,
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
    """Every attempt of one delivery of the caller's subscription."""
    await own_subscription(uow, principal=principal, subscription_id=subscription_id)
    if not await store.has_delivery(uow.session, subscription_id, delivery_id):
        raise DeliveryNotFound(delivery_id)
    return [
        {
            "attempt": a["attempt"],
            "at": as_utc(a["at"]),
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
            as_utc(o["event_time"]),
            delivery_row(
                subscription_id=subscription_id,
                event_id=o["event_id"],
                event_type=o["event_type"],
                event_time=as_utc(o["event_time"]),
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
            delivery_row(
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


def delivery_row(
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
            delivery_row(
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
