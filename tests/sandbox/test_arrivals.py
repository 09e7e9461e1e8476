"""Requests that arrive together at the sandbox each start their department's clock on arrival:
the work of answering the others, which real departments would do on their own machines, does
not delay it."""

from __future__ import annotations

import asyncio
import json
import time

from sandbox.behaviour import Behaviour, Behaviours
from sandbox.departments import DEPARTMENTS
from sandbox.service import Sandbox
from tests.sandbox.test_sandbox import CONSENT, HEADERS, people

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
    # Each request's work, its reply's encoding included, fits inside its latency: the last
    # answer comes about a millisecond late (the event loop's timers wake to the millisecond),
    # 0.1–0.2 × `work` here. When each clock started only once the requests before it had
    # read and rendered their people, it came about `work` late (0.9 × it); when the replies
    # were encoded after the wait, 0.2–0.3 × it.
    assert LATENCY <= took < LATENCY + 0.6 * work, (took, work)
