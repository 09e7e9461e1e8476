"""Requests that arrive together at the sandbox each start their department's clock on arrival:
the work of answering the others, which real departments would do on their own machines, does
not delay it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from sandbox.app import ArrivalStampingProtocol
from sandbox.behaviour import Behaviour, Behaviours
from sandbox.departments import DEPARTMENTS
from sandbox.service import Sandbox
from tests.sandbox.conftest import serving
from tests.sandbox.test_sandbox import CONSENT, HEADERS, ask, people

LATENCY = 0.2
BODY = json.dumps(
    {"people": [{"identity_number": n, "consent_id": CONSENT} for n in people(20)]}
).encode()


def sandbox(latency_ms: int) -> Sandbox:
    behaviour = Behaviour.model_validate({"latency_ms": {"fixed": latency_ms}})
    return Sandbox(
        behaviours=Behaviours(dict.fromkeys(DEPARTMENTS, behaviour), seed=1),
        index_key=b"test-key",
    )


async def answer_all(box: Sandbox) -> float:
    """Seconds until every department has answered a request of 20 people, all sent at once."""
    started = time.perf_counter()
    replies = await asyncio.gather(
        *(box.query_many(code, raw=BODY, headers=HEADERS) for code in DEPARTMENTS)
    )
    took = time.perf_counter() - started
    assert all(len(json.loads(r.body)["answers"]) == 20 for r in replies)
    return took


async def test_requests_that_arrive_together_are_answered_one_latency_later() -> None:
    # The work of answering all 11 requests, with no latency to wait: the least of three.
    work = min([await answer_all(sandbox(0)) for _ in range(3)])
    # The least of three too: a pause of the machine's makes one run late, not three.
    took = min([await answer_all(sandbox(int(LATENCY * 1000))) for _ in range(3)])
    # Each request's work, its reply's encoding included, fits inside its latency (the
    # answers wait on `sandbox.clock`, to the tenth of a millisecond). When each clock started
    # only once the requests before it had read and rendered their people, the last answer
    # came about `work` late (0.9 × it); when the replies were encoded after the wait,
    # 0.2–0.3 × it.
    assert LATENCY <= took < LATENCY + 0.6 * work, (took, work)


def late(app: ASGIApp, seconds: float) -> ASGIApp:
    """`app`, reached `seconds` after a request's bytes were read: the loop busy meanwhile, as
    with the other departments' requests that came just before."""

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            time.sleep(seconds)  # blocks the loop, as others' work on it does
        await app(scope, receive, send)

    return handle


@pytest.mark.parametrize(
    ("protocol", "from_arrival"), [(ArrivalStampingProtocol, True), ("httptools", False)]
)
async def test_a_departments_latency_runs_from_when_the_request_was_read_not_from_its_turn(
    make_sandbox: Callable[..., FastAPI], protocol: object, from_arrival: bool
) -> None:
    app = make_sandbox(faults={"hukou": {"latency_ms": {"fixed": int(LATENCY * 1000)}}})
    async with (
        serving(late(app, 0.15), http=protocol) as url,
        httpx.AsyncClient(base_url=url, timeout=5) as client,
    ):
        await ask(client, "marriage")  # the connection made, the app's first request served
        started = time.perf_counter()
        response = await ask(client, "hukou")
        took = time.perf_counter() - started
    assert response.status_code == 200
    if from_arrival:  # `python -m sandbox` serves with `ArrivalStampingProtocol`
        assert LATENCY <= took + 0.01 < LATENCY + 0.1, took
    else:  # without it the clock starts at the handler, 0.15 s late
        assert took >= LATENCY + 0.15, took
