"""The department protocol's JSON as the transports make and read it (orjson): the request hash
a department makes, each person's answer as their query alone gets it, and what is not JSON."""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from sandbox.behaviour import Behaviours
from sandbox.departments import DEPARTMENTS
from sandbox.protocol import encode, request_hash
from sandbox.service import Sandbox
from services.verification.adapters.transport import Answer, Malformed, Query, _outcomes
from tests.sandbox.test_sandbox import CONSENT, HEADERS, PURPOSE, people

# What JSON escapes or may write either way: controls, quotes, backslash, DEL, NEL, NBSP,
# line and paragraph separators, CJK, a BOM, astral characters.
CHARACTERS = [chr(c) for c in range(0x80)] + [
    "\x85",
    "\xa0",
    "\u2028",
    "\u2029",
    "核",
    "对",
    "\ufeff",
    "\U0001f600",
    "\U0010ffff",
]


def text(rng: random.Random) -> str:
    return "".join(rng.choice(CHARACTERS) for _ in range(rng.randint(0, 12)))


def test_the_request_hash_is_the_one_the_department_makes() -> None:
    rng = random.Random(17)
    for _ in range(3000):
        query = Query(text(rng), text(rng), text(rng), text(rng), as_of=text(rng) or None)
        assert query.request_hash == request_hash(
            department=query.department,
            body=query.body(),
            consent_id=query.consent_id,
            purpose=query.purpose,
        ), query


async def test_each_person_gets_the_bytes_their_query_alone_gets() -> None:
    box = Sandbox(behaviours=Behaviours({}, seed=1), index_key=b"test-key")
    numbers = people(20)
    queries = [Query("finance", n, CONSENT, PURPOSE) for n in numbers]
    body = json.dumps({"people": [{"identity_number": n, "consent_id": CONSENT} for n in numbers]})
    for code in DEPARTMENTS:
        together = await box.query_many(code, raw=body.encode(), headers=HEADERS)
        alone = await asyncio.gather(
            *(
                box.query(code, raw=json.dumps({"identity_number": n}).encode(), headers=HEADERS)
                for n in numbers
            )
        )
        outcomes = _outcomes(together.body, queries)
        assert all(isinstance(o, Answer) for o in outcomes), code
        assert [o.raw for o in outcomes if isinstance(o, Answer)] == [r.body for r in alone], code
        # The sandbox writes as the standard library does (`encode`): the same bytes.
        assert [o.raw for o in outcomes if isinstance(o, Answer)] == [
            encode(item["answer"]) for item in json.loads(together.body)["answers"]
        ]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"answers": [{"status": 200, "answer": {"income": NaN}}]}',  # the standard library's
        b'{"answers": [{"status": 200, "answer": {"income": -Infinity}}]}',
        b'{"answers": [{"status": 200, "answer": {"name": "\xff"}}]}',  # not UTF-8
        b'{"answers": [',
    ],
)
def test_what_is_not_json_is_malformed(raw: bytes) -> None:
    with pytest.raises(Malformed, match="not JSON"):
        _outcomes(raw, [Query("finance", "1", CONSENT, PURPOSE)])


def test_an_integer_beyond_64_bits_keeps_every_digit() -> None:
    answer = b'{"account":123456789012345678901234,"name":"\xe6\xa0\xb8"}'
    (outcome,) = _outcomes(
        b'{"answers": [{"status": 200, "answer": ' + answer + b"}]}",
        [Query("finance", "1", CONSENT, PURPOSE)],
    )
    assert isinstance(outcome, Answer)
    assert outcome.body["account"] == 123456789012345678901234
    assert outcome.raw == answer
