"""Small helpers the tests share."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any

from shared.identity import check_character


def identity_number(
    region: str = "411302", birth: date = date(1980, 5, 17), serial: int = 123
) -> str:
    """A valid GB 11643 number for tests (the check character computed, not hard-coded)."""
    body = f"{region}{birth:%Y%m%d}{serial:03d}"
    return body + check_character(body)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def household_body(
    region: str = "411302",
    *,
    head_number: str | None = None,
    members: list[dict[str, object]] | None = None,
    **fields: object,
) -> dict[str, object]:
    """A valid filing: a head (and any extra members) in `region`."""
    head = {
        "name": "张三明",
        "identity_number": head_number or identity_number(region=region),
        "relation": "head",
    }
    return {
        "location": {"region": region, "address": "建设路12号"},
        "category": "dibao",
        "causes": ["illness"],
        "members": [head, *(members or [])],
        **fields,
    }


async def eventually(
    check: Callable[[], Awaitable[Any]], what: str = "", *, timeout: float = 30
) -> Any:
    """Await `check()` until it returns something truthy; that. `what` names it in the
    failure."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what or 'it'} did not happen within {timeout} s: {result!r}")
        await asyncio.sleep(0.1)
