"""Retries, the circuit breaker, request binding and people asked together, with a scripted
transport (a port fake)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from services.verification.adapters.client import (
    BreakerState,
    DepartmentClient,
    DepartmentConfig,
)
from services.verification.adapters.transport import (
    Answer,
    Malformed,
    Outcome,
    Query,
    Refused,
    Unavailable,
)

QUERY = Query("tax", "11010519491231002X", consent_id="c-1", purpose="申请审核")


class Scripted:
    """Answers from a script: an exception to raise, or True for a good answer."""

    def __init__(self, *script: Exception | bool):
        self.script = list(script)
        self.sent = 0

    async def send(self, query: Query, *, timeout: float) -> Answer:
        self.sent += 1
        step = self.script.pop(0) if self.script else True
        if isinstance(step, Exception):
            raise step
        return Answer({"ok": True}, b'{"ok": true}', query.request_hash)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def client(transport: Scripted, clock: Clock | None = None, **config: object) -> DepartmentClient:
    return DepartmentClient(
        DepartmentConfig("tax", **config),
        transport,  # type: ignore[arg-type]
        clock=clock or Clock(),
        max_backoff=0.01,
    )


class TestRetries:
    async def test_a_transient_failure_is_retried_and_then_succeeds(self) -> None:
        transport = Scripted(Unavailable("HTTP 503"), Unavailable("timeout"))
        answer = await client(transport, retries=2).query(QUERY)
        assert answer.body == {"ok": True}
        assert transport.sent == 3

    async def test_without_retries_a_failure_is_asked_once_and_raised(self) -> None:
        transport = Scripted(Unavailable("down"), True)
        with pytest.raises(Unavailable):
            await client(transport, retries=0).query(QUERY)
        assert transport.sent == 1
        assert (await client(transport, retries=0).query(QUERY)).body == {"ok": True}

    async def test_a_refusal_is_never_retried(self) -> None:
        transport = Scripted(Refused("HTTP 400"))
        with pytest.raises(Refused):
            await client(transport, retries=5).query(QUERY)
        assert transport.sent == 1

    async def test_a_malformed_answer_is_never_retried(self) -> None:
        transport = Scripted(Malformed("not JSON"))
        with pytest.raises(Malformed):
            await client(transport, retries=5).query(QUERY)
        assert transport.sent == 1

    async def test_retries_are_bounded(self) -> None:
        transport = Scripted(*[Unavailable("down")] * 10)
        with pytest.raises(Unavailable):
            await client(transport, retries=2).query(QUERY)
        assert transport.sent == 3


class TestCircuitBreaker:
    async def test_it_opens_after_repeated_failures_and_lets_a_trial_through_later(self) -> None:
        clock = Clock()
        transport = Scripted(*[Unavailable("down")] * 3)
        department = client(
            transport, clock, retries=0, breaker_failures=3, breaker_reset_seconds=30
        )
        for _ in range(3):
            with pytest.raises(Unavailable):
                await department.query(QUERY)
        assert department.breaker.state is BreakerState.OPEN
        with pytest.raises(Unavailable, match="circuit open"):
            await department.query(QUERY)
        assert transport.sent == 3  # the open circuit did not call
        clock.now = 31
        assert department.breaker.state is BreakerState.HALF_OPEN
        await department.query(QUERY)
        assert department.breaker.state is BreakerState.CLOSED
        assert department.health()["failures"] == 3

    async def test_a_failed_trial_opens_it_again_at_once(self) -> None:
        clock = Clock()
        department = client(
            Scripted(*[Unavailable("down")] * 4),
            clock,
            retries=0,
            breaker_failures=3,
            breaker_reset_seconds=30,
        )
        for _ in range(3):
            with pytest.raises(Unavailable):
                await department.query(QUERY)
        clock.now = 31
        with pytest.raises(Unavailable, match="down"):
            await department.query(QUERY)
        assert department.breaker.state is BreakerState.OPEN


class TestRequestBinding:
    async def test_an_answer_echoing_another_requests_hash_is_malformed(self) -> None:
        class Misbound(Scripted):
            async def send(self, query: Query, *, timeout: float) -> Answer:
                return Answer({}, b"{}", "0" * 64)

        with pytest.raises(Malformed, match="request hash"):
            await client(Misbound()).query(QUERY)

    def test_the_request_hash_covers_consent_and_purpose(self) -> None:
        other_consent = Query("tax", QUERY.identity_number, "c-2", QUERY.purpose)
        other_purpose = Query("tax", QUERY.identity_number, "c-1", "复核")
        hashes = {QUERY.request_hash, other_consent.request_hash, other_purpose.request_hash}
        assert len(hashes) == 3
        assert QUERY.headers()["Bangfu-Purpose"] == "%E7%94%B3%E8%AF%B7%E5%AE%A1%E6%A0%B8"


def queries(count: int, purpose: str = "复核") -> list[Query]:
    return [Query("tax", f"number-{n}", consent_id=f"c-{n}", purpose=purpose) for n in range(count)]


class Gated:
    """Holds every request until opened; notes the people each request asked about."""

    def __init__(self, *, misbind: str | None = None, fail: Exception | None = None):
        self.requests: list[list[str]] = []
        self.purposes: list[set[str]] = []  # of each request about several people
        self.gate = asyncio.Event()
        self.misbind = misbind
        self.fail = fail

    def _answer(self, query: Query) -> Answer:
        echoed = "0" * 64 if query.identity_number == self.misbind else query.request_hash
        return Answer({"number": query.identity_number}, b"{}", echoed)

    async def send(self, query: Query, *, timeout: float) -> Answer:
        self.requests.append([query.identity_number])
        await self.gate.wait()
        if self.fail:
            raise self.fail
        return self._answer(query)

    async def send_many(self, queries: Sequence[Query], *, timeout: float) -> list[Outcome]:
        self.requests.append([q.identity_number for q in queries])
        self.purposes.append({q.purpose for q in queries})
        await self.gate.wait()
        if self.fail:
            raise self.fail
        return [self._answer(q) for q in queries]


def gated_client(transport: Gated, **config: object) -> DepartmentClient:
    return DepartmentClient(DepartmentConfig("tax", retries=0, **config), transport)  # type: ignore[arg-type]


class TestPeopleTogether:
    async def test_people_waiting_for_a_busy_slot_go_together_when_it_frees(self) -> None:
        transport = Gated()
        department = gated_client(transport, concurrency=1)
        first, *waiting = queries(4)
        asked = [asyncio.create_task(department.query(q)) for q in (first, *waiting)]
        await asyncio.sleep(0.01)
        assert transport.requests == [["number-0"]]  # the slot is busy: the others wait
        transport.gate.set()
        answers = await asyncio.gather(*asked)
        assert transport.requests == [["number-0"], ["number-1", "number-2", "number-3"]]
        assert [a.body["number"] for a in answers] == [f"number-{n}" for n in range(4)]
        assert department.calls == 2

    async def test_people_asked_for_another_purpose_wait_for_a_request_of_their_own(
        self,
    ) -> None:
        transport = Gated()
        department = gated_client(transport, concurrency=1)
        busy = asyncio.create_task(department.query(queries(1)[0]))
        await asyncio.sleep(0.01)
        review, application, review_too = (
            asyncio.create_task(department.query_many(q))
            for q in (queries(3)[1:], queries(4, "申请审核")[3:], queries(6)[4:])
        )
        await asyncio.sleep(0.01)
        transport.gate.set()
        await asyncio.gather(busy, review, application, review_too)
        # The waiting reviews go together, ahead of the application that waited between them.
        assert transport.requests == [
            ["number-0"],
            ["number-1", "number-2", "number-4", "number-5"],
            ["number-3"],
        ]
        assert transport.purposes == [{"复核"}]
        assert [a.body["number"] for a in application.result()] == ["number-3"]
        assert await department.query_many([]) == []

    async def test_a_request_asks_at_most_people_per_request(self) -> None:
        transport = Gated()
        transport.gate.set()
        department = gated_client(transport, concurrency=2, people_per_request=2)
        outcomes = await department.query_many(queries(5))
        assert sorted(len(r) for r in transport.requests) == [1, 2, 2]
        assert [o.body["number"] for o in outcomes if isinstance(o, Answer)] == [
            f"number-{n}" for n in range(5)
        ]

    async def test_an_answer_bound_to_another_request_fails_only_its_person(self) -> None:
        transport = Gated(misbind="number-1")
        transport.gate.set()
        outcomes = await gated_client(transport).query_many(queries(3))
        assert [type(o) for o in outcomes] == [Answer, Malformed, Answer]
        assert "request hash" in str(outcomes[1])

    async def test_a_failed_request_is_the_outcome_of_everyone_it_asked_about(self) -> None:
        transport = Gated(fail=Unavailable("HTTP 503"))
        transport.gate.set()
        department = gated_client(transport, breaker_failures=100)
        outcomes = await department.query_many(queries(3))
        assert [str(o) for o in outcomes] == ["HTTP 503"] * 3
        assert all(isinstance(o, Unavailable) for o in outcomes)
        assert (department.calls, department.failures) == (1, 1)
        with pytest.raises(Unavailable, match="HTTP 503"):
            await department.query(queries(1)[0])

    async def test_a_cancelled_callers_people_are_not_asked(self) -> None:
        transport = Gated()
        department = gated_client(transport, concurrency=1)
        busy = asyncio.create_task(department.query(queries(1)[0]))
        gone = asyncio.create_task(department.query_many(queries(3)[1:]))
        await asyncio.sleep(0.01)
        gone.cancel()
        later = asyncio.create_task(department.query(queries(4)[3]))
        await asyncio.sleep(0.01)
        transport.gate.set()
        await asyncio.gather(busy, later)
        assert transport.requests == [["number-0"], ["number-3"]]
