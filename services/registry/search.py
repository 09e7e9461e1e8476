"""Finding households by a person: by identity number (through its blind index) or by name.

Kept out of `store.py` so that the write path there changes independently; the queries read
the same tables and are confined the same way as the list (`region_condition`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.registry.service import INDEX_PURPOSE, summary
from services.registry.store import household, member
from shared.crypto import Keyring, blind_index
from shared.db import region_condition
from shared.identity import parse_identity_number

# `%`, `_` and the escape itself typed in a name are matched as themselves.
_LIKE_ESCAPE = "\\"


def _literal_prefix(text: str) -> str:
    escaped = (
        text.replace(_LIKE_ESCAPE, _LIKE_ESCAPE * 2)
        .replace("%", _LIKE_ESCAPE + "%")
        .replace("_", _LIKE_ESCAPE + "_")
    )
    return escaped + "%"


async def _matching(
    session: AsyncSession,
    *,
    regions: Sequence[str],
    member_condition: Any,
    after: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Households of `regions` with a member meeting `member_condition`, ordered by id."""
    query = select(household).where(
        region_condition(household.c.region, regions),
        household.c.id.in_(select(member.c.household_id).where(member_condition)),
    )
    if after:
        query = query.where(household.c.id > after)
    rows = await session.execute(query.order_by(household.c.id).limit(limit))
    return [dict(r) for r in rows.mappings()]


async def by_identity_number(
    session: AsyncSession,
    *,
    keyring: Keyring,
    regions: Sequence[str],
    identity_number: str,
    today: date,
    limit: int,
) -> list[dict[str, Any]]:
    """List entries of the households (of `regions`) that have this person as a member.

    The number is validated and normalised as filing does (so a lower-case x or full-width
    digits find the same person) and looked up by its blind index only: it is never stored,
    compared or logged in clear. Raises InvalidIdentityNumber for a number that is not one.
    """
    number = parse_identity_number(identity_number, today=today).number
    index = blind_index(keyring, number, purpose=INDEX_PURPOSE)
    rows = await _matching(
        session,
        regions=regions,
        member_condition=member.c.identity_index == index,
        after=None,
        limit=limit,
    )
    return [summary(r) for r in rows]


async def by_name(
    session: AsyncSession,
    *,
    regions: Sequence[str],
    name: str,
    after: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    """List entries of the households (of `regions`) with a member whose name starts with
    `name` (names are stored in clear, so a family name alone finds the family)."""
    rows = await _matching(
        session,
        regions=regions,
        member_condition=member.c.name.like(_literal_prefix(name), escape=_LIKE_ESCAPE),
        after=after,
        limit=limit,
    )
    return [summary(r) for r in rows]
