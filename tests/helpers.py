"""Small helpers the tests share."""

from __future__ import annotations

from datetime import date

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"


def identity_number(
    region: str = "411302", birth: date = date(1980, 5, 17), serial: int = 123
) -> str:
    """A valid GB 11643 number for tests (the check character computed, not hard-coded)."""
    body = f"{region}{birth:%Y%m%d}{serial:03d}"
    return body + _CHECK[sum(int(d) * w for d, w in zip(body, _WEIGHTS, strict=True)) % 11]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
