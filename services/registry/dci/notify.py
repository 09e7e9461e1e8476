"""Household events from JetStream as DCI `/registry/notify` calls to each subscriber.

A consumer of the registry's own household events: for every active subscription whose
regions hold the household, whose event type the event is, and whose filter the household
matches, a notify is queued (in the consumer's transaction, deduplicated by its inbox) and the
delivery worker sends it, in order per subscription, retried, dead after the last attempt.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import and_, select

from services.registry import store as registry_store
from services.registry.dci import query, store
from services.registry.dci.envelope import callback_header, now_iso
from services.registry.dci.mapping import group_record, member_record
from services.registry.dci.operations import EVENT_TYPES, REG_TYPE
from services.registry.settings import RegistrySettings
from shared.crypto import Keyring
from shared.db import UnitOfWork
from shared.events.consumer import Handler, Subscription
from shared.events.envelope import CloudEvent, new_event_id
from shared.regions import region_in

CONSUMER = "registry-dci-notify"


def _event_name(event: CloudEvent) -> str:
    """`cn.bangfu.registry.household.member_added.v1` -> `member_added`."""
    return event.type.split(".")[-2]


async def _matches(
    uow: UnitOfWork, subscription: dict[str, Any], household_id: str, keyring: Keyring
) -> bool:
    condition = query.condition(
        subscription["filter_type"], subscription["filter"], keyring=keyring, today=date.today()
    )
    household = registry_store.household
    found = await uow.session.execute(
        select(household.c.id).where(and_(household.c.id == household_id, condition))
    )
    return found.first() is not None


def _listening(active: list[dict[str, Any]], event: CloudEvent) -> list[dict[str, Any]]:
    """The active subscriptions to the event's type whose regions hold its household."""
    event_type = EVENT_TYPES.get(_event_name(event))
    return [
        s
        for s in active
        if s["event_type"] == event_type
        and s["sender_uri"]
        and region_in(event.region, s["regions"])
    ]


async def wanted(events: list[CloudEvent], uow: UnitOfWork) -> set[str]:
    """The events some subscription listens to: the rest are acknowledged with no inbox row
    and no transaction (most households have no subscriber; bench/registry.py).

    The subscriptions as committed, read apart from the unit's transaction: in it, on SQLite,
    the read took the write lock and two calls to the driver's thread for each event the
    registry wrote, which its writers waited behind (bench/registry.py, stop 49)."""
    typed = [event for event in events if _event_name(event) in EVENT_TYPES]
    if not typed:
        return set()
    active = [dict(row) for row in await uow.read_committed(store.ACTIVE_SUBSCRIPTIONS)]
    return {event.id for event in typed if _listening(active, event)}


def handler(settings: RegistrySettings, batch: list[list[dict[str, Any]]] | None = None) -> Handler:
    """`batch`, when given, holds the active subscriptions (one list) while the batch scope
    has them read for a fetched batch; an event handled alone reads them itself."""
    # The keys are read at the first event, not when the consumer is declared: the NATS
    # permissions are generated from the declaration by a process that holds no keys.
    keyrings: list[Keyring] = []

    async def on_household_event(event: CloudEvent, uow: UnitOfWork) -> None:
        event_type = EVENT_TYPES.get(_event_name(event))
        if event_type is None:
            return  # visits, helpers, incomes: not registry events of the DCI
        active = batch[0] if batch else await store.active_subscriptions(uow.session)
        subscriptions = _listening(active, event)
        if not subscriptions:
            return
        row = await registry_store.get_household(uow.session, event.subject)
        if row is None:
            return
        members = await registry_store.get_members(uow.session, event.subject)
        today = date.today()
        now = datetime.now(UTC)
        keyring = keyrings[0] if keyrings else settings.keyring()
        keyrings[:1] = [keyring]
        for subscription in subscriptions:
            if not await _matches(uow, subscription, event.subject, keyring):
                continue
            # Notifications are never in clear: there is no purpose to record for them.
            if subscription["record_type"] == "Member":
                records: Any = [member_record(m, keyring=None, today=today) for m in members]
            else:
                records = group_record(row, members=members, keyring=None, today=today)
            message = {
                "transaction_id": new_event_id(),
                "notify_event": [
                    {
                        "reference_id": event.id,
                        "timestamp": now_iso(),
                        "data": {
                            "version": "1.0.0",
                            "reg_type": REG_TYPE,
                            "reg_event_type": event_type,
                            "reg_record_type": subscription["record_type"],
                            "reg_records": records,
                            "subscription_code": subscription["code"],
                            "event_sequence": event.sequence,
                        },
                    }
                ],
            }
            header = callback_header(
                "notify",
                sender_id=settings.dci_sender_id,
                receiver_id=subscription["sender_id"],
                status="succ",
                total=1,
                completed=1,
            )
            await store.add_delivery(
                uow.session,
                ordering_key=f"sub:{subscription['code']}",
                url=subscription["sender_uri"],
                action="notify",
                body={"header": header, "message": message},
                now=now,
            )

    return on_household_event


def subscription(settings: RegistrySettings) -> Subscription:
    # A household write brings an event or two: the subscriptions are read once for a fetched
    # batch, in its transaction, not once per event (a SELECT per event before).
    held: list[list[dict[str, Any]]] = []

    @contextlib.asynccontextmanager
    async def batch_scope(
        _events: list[CloudEvent], uow: UnitOfWork, _ahead: object
    ) -> AsyncIterator[None]:
        held[:] = [await store.active_subscriptions(uow.session)]
        try:
            yield
        finally:
            held.clear()

    return Subscription(
        CONSUMER,
        "REGISTRY",
        ["bangfu.registry.household.>"],
        handler(settings, held),
        batch=batch_scope,
        wanted=wanted,
    )
