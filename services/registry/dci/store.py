"""The DCI tables, in the registry's database: transactions, subscriptions, callbacks to send.

They share the registry's metadata (and so its migrations): the DCI API is the registry's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    String,
    Table,
    Text,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from services.registry.store import metadata
from shared.crypto import Keyring, decrypt, encrypt

# A reply holding identity numbers in clear (pii:read) is kept and queued sealed, never as text.
SEALED = "dci.reply"

_big_id = BigInteger().with_variant(Integer, "sqlite")

# One row per DCI request accepted (sync or async): what was asked and what was answered, so
# that txn/status can answer after a restart and an async reply is never lost after its ACK.
transaction = Table(
    "dci_transaction",
    metadata,
    Column("correlation_id", String(36), primary_key=True),
    Column("transaction_id", String(99), nullable=False),
    Column("client_id", String(200), nullable=False),
    Column("sender_id", String(200), nullable=False),
    # The token's regions when it asked: txn/status shows the reply only to a token of the
    # same client that covers all of them (a region is not a client's property).
    Column("regions", JSON, nullable=False),
    Column("action", String(20), nullable=False),  # search | subscribe | unsubscribe | txn-status
    Column("status", String(10), nullable=False),  # rcvd | pdng | succ | rjct (the spec's)
    Column("reference_ids", JSON, nullable=False),
    Column("reply", JSON, nullable=False),  # the on-* message answered or to be delivered
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_dci_transaction_client_transaction", "client_id", "transaction_id"),
)

subscription = Table(
    "dci_subscription",
    metadata,
    Column("code", String(99), primary_key=True),
    Column("client_id", String(200), nullable=False),
    Column("sender_id", String(200), nullable=False),
    Column("sender_uri", String(2000)),
    # The subscriber's regions when it subscribed: notify never leaves them.
    Column("regions", JSON, nullable=False),
    Column("event_type", String(40), nullable=False),
    Column("filter_type", String(20), nullable=False),
    Column("filter", JSON, nullable=False),
    Column("record_type", String(20), nullable=False),
    Column("status", String(12), nullable=False),  # subscribe | unsubscribe
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True)),
    Index("ix_dci_subscription_status", "status"),
)

# Callbacks and notifications to send: delivered in `id` order per ordering key (a
# subscription's notifications in the order of the events), retried, dead after the last try.
delivery = Table(
    "dci_delivery",
    metadata,
    Column("id", _big_id, primary_key=True),
    Column("ordering_key", String(120), nullable=False),
    Column("url", String(2000), nullable=False),
    Column("action", String(20), nullable=False),
    Column("body", JSON, nullable=False),  # the envelope, signed when it is sent
    Column("status", String(10), nullable=False),  # pending | delivered | dead
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("last_error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("delivered_at", DateTime(timezone=True)),
    Index("ix_dci_delivery_status_key", "status", "ordering_key", "id"),
)


def seal(keyring: Keyring, message: dict[str, Any]) -> dict[str, str]:
    return {"sealed": encrypt(keyring, json.dumps(message, ensure_ascii=False), context=SEALED)}


def unseal(keyring: Keyring, stored: dict[str, Any]) -> dict[str, Any]:
    """The message of a stored reply or delivery body, opened if it was sealed."""
    if "sealed" not in stored:
        message: dict[str, Any] = stored.get("message", stored)
        return message
    opened: dict[str, Any] = json.loads(decrypt(keyring, stored["sealed"], context=SEALED))
    return opened


async def add_transaction(session: AsyncSession, row: dict[str, Any]) -> None:
    await session.execute(insert(transaction).values(**row))


async def find_transactions(
    session: AsyncSession, *, client_id: str, attribute: str, values: Sequence[str]
) -> list[dict[str, Any]]:
    """The caller's own transactions by transaction_id, correlation_id or reference id."""
    query = select(transaction).where(transaction.c.client_id == client_id)
    if attribute == "transaction_id":
        query = query.where(transaction.c.transaction_id.in_(values))
    elif attribute == "correlation_id":
        query = query.where(transaction.c.correlation_id.in_(values))
    rows = [
        dict(r)
        for r in (await session.execute(query.order_by(transaction.c.created_at))).mappings()
    ]
    if attribute == "reference_id_list":
        wanted = set(values)
        rows = [r for r in rows if wanted & set(r["reference_ids"])]
    return rows


async def add_subscription(session: AsyncSession, row: dict[str, Any]) -> None:
    await session.execute(insert(subscription).values(**row))


async def get_subscriptions(
    session: AsyncSession, codes: Sequence[str]
) -> dict[str, dict[str, Any]]:
    rows = await session.execute(select(subscription).where(subscription.c.code.in_(codes)))
    return {r["code"]: dict(r) for r in rows.mappings()}


async def end_subscription(session: AsyncSession, code: str, *, now: datetime) -> None:
    await session.execute(
        update(subscription)
        .where(subscription.c.code == code)
        .values(status="unsubscribe", ended_at=now)
    )


ACTIVE_SUBSCRIPTIONS = (
    select(subscription).where(subscription.c.status == "subscribe").order_by(subscription.c.code)
)


async def active_subscriptions(session: AsyncSession) -> list[dict[str, Any]]:
    return [dict(r) for r in (await session.execute(ACTIVE_SUBSCRIPTIONS)).mappings()]


async def add_delivery(
    session: AsyncSession,
    *,
    ordering_key: str,
    url: str,
    action: str,
    body: dict[str, Any],
    now: datetime,
) -> None:
    await session.execute(
        insert(delivery).values(
            ordering_key=ordering_key,
            url=url,
            action=action,
            body=body,
            status="pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )


async def due_deliveries(
    session: AsyncSession, *, now: datetime, limit: int
) -> list[dict[str, Any]]:
    """The first pending delivery of each ordering key, if it is due: later ones wait for it."""
    heads = (
        select(func.min(delivery.c.id))
        .where(delivery.c.status == "pending")
        .group_by(delivery.c.ordering_key)
        .scalar_subquery()
    )
    rows = await session.execute(
        select(delivery)
        .where(delivery.c.id.in_(heads), delivery.c.next_attempt_at <= now)
        .order_by(delivery.c.id)
        .limit(limit)
    )
    return [dict(r) for r in rows.mappings()]


async def claim(session: AsyncSession, row: dict[str, Any], *, until: datetime) -> bool:
    """Take a due delivery for one attempt: another registry process that read it too gets
    False (its `next_attempt_at` moved), so each attempt is made once."""
    result = await session.execute(
        update(delivery)
        .where(
            delivery.c.id == row["id"],
            delivery.c.status == "pending",
            delivery.c.next_attempt_at == row["next_attempt_at"],
        )
        .values(next_attempt_at=until)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def record_attempt(
    session: AsyncSession,
    delivery_id: int,
    *,
    status: str,
    attempts: int,
    next_attempt_at: datetime,
    error: str | None,
    now: datetime,
) -> None:
    await session.execute(
        update(delivery)
        .where(delivery.c.id == delivery_id)
        .values(
            status=status,
            attempts=attempts,
            next_attempt_at=next_attempt_at,
            last_error=error,
            delivered_at=now if status == "delivered" else None,
        )
    )


async def deliveries(
    session: AsyncSession, *, ordering_key: str | None = None
) -> list[dict[str, Any]]:
    query = select(delivery).order_by(delivery.c.id)
    if ordering_key is not None:
        query = query.where(delivery.c.ordering_key == ordering_key)
    return [dict(r) for r in (await session.execute(query)).mappings()]
