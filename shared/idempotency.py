"""`Idempotency-Key` on writes: the same key and body replays the first answer; another body is
refused (422), so a retry after a lost response never files the same thing twice. A replay is
bound to the powers of the token that made the answer: another token of the same client with
other regions or scopes is refused too, since nothing checked its powers for that answer."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Integer, String, Table, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.auth import Principal
from shared.db import common_metadata
from shared.problems import Problem

idempotency_key = Table(
    "idempotency_key",
    common_metadata,
    Column("client_id", String(200), primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("body", JSON, nullable=False),
    Column("headers", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True)
class StoredResponse:
    status_code: int
    body: Any
    headers: dict[str, str]


def request_hash(principal: Principal, method: str, path: str, body: Any) -> str:
    """A digest of what was asked and with which powers (regions, scopes): the same key may only
    ever mean this request by a token allowed what the first one was."""
    powers = [sorted(principal.regions), sorted(principal.scopes)]
    canonical = json.dumps(
        [method, path, body, powers],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


async def replay(
    session: AsyncSession, *, client_id: str, key: str, digest: str
) -> StoredResponse | None:
    """The stored answer for this key, None when new; 422 when the key came with another body or
    from a token with other regions or scopes (which it does not tell)."""
    if len(key) > 200:
        raise Problem(422, "invalid-input", "Idempotency-Key is longer than 200 characters")
    row = (
        (
            await session.execute(
                select(idempotency_key).where(
                    idempotency_key.c.client_id == client_id, idempotency_key.c.key == key
                )
            )
        )
        .mappings()
        .one_or_none()
    )
    if row is None:
        return None
    if row["request_hash"] != digest:
        raise Problem(
            422,
            "idempotency-key-reused",
            "this Idempotency-Key was used with a different request, or by a token with other "
            "regions or scopes: send the same request with the same rights, or use a new key",
        )
    return StoredResponse(row["status_code"], row["body"], dict(row["headers"]))


async def remember(
    session: AsyncSession, *, client_id: str, key: str, digest: str, response: StoredResponse
) -> None:
    """Store the answer in the same transaction as the write it answers."""
    await session.execute(
        insert(idempotency_key).values(
            client_id=client_id,
            key=key,
            request_hash=digest,
            status_code=response.status_code,
            body=response.body,
            headers=response.headers,
            created_at=datetime.now(UTC),
        )
    )
