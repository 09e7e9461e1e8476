"""The services' JSON answers, written by orjson: the bytes `jsonable_encoder` would give."""

from __future__ import annotations

import enum
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from shared.service import FastJSONResponse


class Colour(enum.Enum):
    RED = "red"


def test_the_same_bytes_as_jsonable_encoders() -> None:
    body = {
        "id": "0192",
        "purpose": "核对: 低保",
        "requested_at": datetime(2026, 12, 2, 8, 1, 2, 345678, tzinfo=UTC),
        "finished_at": datetime(2026, 12, 2, 8, 1, 2),
        "refetch_at": datetime(2026, 12, 2, 16, 0, tzinfo=timezone(timedelta(hours=8))),
        "as_of": date(2026, 11, 30),
        "reason": None,
        "report_version": 0,
        "ratio": 0.1,
        "colour": Colour.RED,
        "departments": ("tax", "property"),
        "members": [{"member_id": "m1", "consent": {"tax": "valid"}}],
        "sole": {"only"},  # orjson knows no set: `jsonable_encoder` does it
        "amount": Decimal("12.5"),
    }
    ours = FastJSONResponse(body, status_code=202, headers={"Location": "/v1/x"})
    theirs = JSONResponse(jsonable_encoder(body), status_code=202)
    assert ours.body == theirs.body
    assert (ours.status_code, ours.headers["location"]) == (202, "/v1/x")
    assert ours.headers["content-type"] == "application/json"
