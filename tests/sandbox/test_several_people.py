"""A department asked about several people in one request (`/queries`, `bangfu.dept.<code>.
queries`): each person's answer is the one their own query gets, bound by the same hash; a
person it refuses does not fail the others; faults of the exchange are the request's, a wrong
schema is the person's; one latency for the whole request; both transports alike."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from nats.aio.client import Client as NATS

from services.verification.adapters.transport import (
    Answer,
    HttpTransport,
    Malformed,
    NatsTransport,
    Query,
    Refused,
    Unavailable,
)
from tests.conftest import running
from tests.helpers import identity_number
from tests.sandbox.conftest import serving
from tests.sandbox.test_sandbox import (
    CONSENT,
    FIELDS,
    HEADERS,
    PURPOSE,
    ask,
    expected_hash,
    people,
    set_behaviour,
)

PURPOSE_ONLY = {"Bangfu-Purpose": HEADERS["Bangfu-Purpose"]}


def person(number: str, consent: str = CONSENT, **body: Any) -> dict[str, Any]:
    return {"identity_number": number, "consent_id": consent, **body}


def miswritten(number: str) -> str:
    """The number with another check character."""
    return number[:-1] + ("1" if number[-1] != "1" else "2")


async def ask_many(
    client: httpx.AsyncClient, code: str, body: Any, headers: dict[str, str] | None = None
) -> httpx.Response:
    return await client.post(
        f"/departments/{code}/queries",
        json=body,
        headers=PURPOSE_ONLY if headers is None else headers,
    )


class TestAnswers:
    async def test_each_person_gets_their_own_querys_answer_and_hash(
        self, client: httpx.AsyncClient
    ) -> None:
        numbers = people(3)
        for code in FIELDS:
            response = await ask_many(
                client,
                code,
                {"people": [person(n, f"c-{i}") for i, n in enumerate(numbers)]},
            )
            assert response.status_code == 200, response.text
            answers = response.json()["answers"]
            for i, (number, item) in enumerate(zip(numbers, answers, strict=True)):
                alone = await ask(
                    client, code, number, headers={**HEADERS, "Bangfu-Consent-Id": f"c-{i}"}
                )
                assert item["status"] == 200
                assert item["answer"] == alone.json()
                assert item["request_hash"] == alone.headers["Bangfu-Request-Hash"]
                assert item["request_hash"] == expected_hash(
                    code, {"identity_number": number}, f"c-{i}", PURPOSE
                )

    async def test_a_person_refused_does_not_fail_the_others(
        self, client: httpx.AsyncClient
    ) -> None:
        good = people(1)[0]
        unborn = identity_number(birth=date.today() + timedelta(days=30), serial=5)
        response = await ask_many(
            client,
            "hukou",
            {"people": [person(good), person(miswritten(good)), person(unborn)]},
        )
        assert response.status_code == 200
        first, bad_check, future = response.json()["answers"]
        assert first["status"] == 200 and first["answer"]["department"] == "hukou"
        assert bad_check["status"] == 422
        assert bad_check["error"]["type"] == "invalid-identity-number"
        assert future["status"] == 422

    async def test_the_request_as_a_whole_is_checked(self, client: httpx.AsyncClient) -> None:
        number = people(1)[0]
        no_purpose = await ask_many(client, "tax", {"people": [person(number)]}, headers={})
        assert no_purpose.status_code == 400
        assert no_purpose.json()["type"].endswith("missing-header")
        for body in (
            {"people": []},
            {"people": [person(number)] * 51},
            {"people": [{"identity_number": number}]},  # no consent id
            {"people": [person(number)], "extra": 1},
        ):
            response = await ask_many(client, "tax", body)
            assert response.status_code == 422, body
            assert response.headers["content-type"] == "application/problem+json"
        not_json = await client.post("/departments/tax/queries", content=b"{", headers=PURPOSE_ONLY)
        assert not_json.status_code == 400

    async def test_it_is_documented(self, client: httpx.AsyncClient) -> None:
        post = (await client.get("/openapi.json")).json()["paths"]["/departments/{code}/queries"][
            "post"
        ]
        assert {p["name"] for p in post["parameters"]} == {"code", "Bangfu-Purpose"}
        schema = post["requestBody"]["content"]["application/json"]["schema"]
        assert schema["properties"]["people"]["maxItems"] == 50
        assert set(schema["properties"]["people"]["items"]["properties"]) == {
            "identity_number",
            "as_of",
            "consent_id",
        }
        assert "$ref" not in json.dumps(schema)

    async def test_one_latency_for_the_whole_request(self, client: httpx.AsyncClient) -> None:
        await set_behaviour(client, "vehicle", latency_ms={"fixed": 200})
        started = time.perf_counter()
        response = await ask_many(client, "vehicle", {"people": [person(n) for n in people(10)]})
        took = time.perf_counter() - started
        assert response.status_code == 200
        assert 0.19 <= took < 1.5  # ten people asked one after the other would take 2 s


class TestFaults:
    async def test_a_fault_of_the_exchange_is_the_requests(self, client: httpx.AsyncClient) -> None:
        body = {"people": [person(n) for n in people(3)]}
        await set_behaviour(client, "tax", fault="http_500")
        assert (await ask_many(client, "tax", body)).status_code == 500
        await set_behaviour(client, "tax", fault="malformed_json")
        cut = await ask_many(client, "tax", body)
        assert cut.status_code == 200
        with pytest.raises(json.JSONDecodeError):
            json.loads(cut.content)

    async def test_a_wrong_schema_is_only_that_persons(
        self, make_sandbox: Callable[..., FastAPI]
    ) -> None:
        numbers = people(40)
        async with running(make_sandbox(seed=2025)) as client:
            await set_behaviour(client, "tax", fault="wrong_schema", fault_rate=0.5)
            alone = [(await ask(client, "tax", n)).json() for n in numbers]
            together = await ask_many(client, "tax", {"people": [person(n) for n in numbers]})
        answers = [item["answer"] for item in together.json()["answers"]]
        assert answers == alone  # the fault follows the person, together or alone
        wrong = [a for a in answers if "months" not in a]
        assert 0 < len(wrong) < len(numbers)


class TestTransports:
    async def test_both_transports_give_each_person_their_answer(
        self, make_sandbox: Callable[..., FastAPI], nc: NATS
    ) -> None:
        numbers = people(3)
        queries = [
            Query("finance", n, consent_id=f"c-{i}", purpose=PURPOSE) for i, n in enumerate(numbers)
        ]
        async with (
            serving(make_sandbox(seed=1)) as url,
            HttpTransport.session(connections=1) as session,
        ):
            http = HttpTransport(session, url)
            over_http = await http.send_many(queries, timeout=5)
            over_nats = await NatsTransport(nc).send_many(queries, timeout=5)
            alone = [await http.send(q, timeout=5) for q in queries]
        for outcomes in (over_http, over_nats):
            assert all(isinstance(o, Answer) for o in outcomes)
            assert [o.raw for o in outcomes if isinstance(o, Answer)] == [a.raw for a in alone]
            assert [o.echoed_hash for o in outcomes if isinstance(o, Answer)] == [
                q.request_hash for q in queries
            ]

    async def test_outcomes_per_person_and_for_the_whole_request(
        self, make_sandbox: Callable[..., FastAPI], nc: NATS
    ) -> None:
        good = people(1)[0]
        queries = [
            Query("tax", n, consent_id=CONSENT, purpose=PURPOSE) for n in (good, miswritten(good))
        ]
        # The one sandbox here answers both transports.
        async with (
            serving(make_sandbox(seed=1)) as url,
            httpx.AsyncClient(base_url=url) as admin,
            HttpTransport.session(connections=1) as session,
        ):
            http = HttpTransport(session, url)
            answer, refused = await http.send_many(queries, timeout=5)
            assert isinstance(answer, Answer) and isinstance(refused, Refused)
            assert "invalid-identity-number" in str(refused)
            await set_behaviour(admin, "tax", fault="http_500")
            for transport in (http, NatsTransport(nc)):
                with pytest.raises(Unavailable):
                    await transport.send_many(queries, timeout=5)
            await set_behaviour(admin, "tax", fault="malformed_json")
            for transport in (http, NatsTransport(nc)):
                with pytest.raises(Malformed):
                    await transport.send_many(queries, timeout=5)
