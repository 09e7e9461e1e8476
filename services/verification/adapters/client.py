"""One department's client: concurrency limit, people asked together, retries with jittered
backoff for transient failures only, a circuit breaker, and the live health
`GET /v1/departments` shows."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, TypeVar

from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from services.verification.adapters.transport import (
    Answer,
    Malformed,
    Outcome,
    Query,
    Refused,
    Transport,
    Unavailable,
)

T = TypeVar("T")


@dataclass(frozen=True)
class DepartmentConfig:
    """Per-department settings; a new department is one mapper plus one of these."""

    code: str
    transport: Literal["http", "nats"] = "http"
    timeout_seconds: float = 5.0
    concurrency: int = 8
    retries: int = 2
    breaker_failures: int = 5  # consecutive unavailable answers that open the circuit
    breaker_reset_seconds: float = 30.0
    # People one request may ask about (a household's members at once); 1 asks one a request,
    # for a department that only answers that way.
    people_per_request: int = 20


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Stops calling a department that keeps failing; lets one trial call through later."""

    def __init__(
        self, *, failures: int, reset_seconds: float, clock: Callable[[], float] = time.monotonic
    ):
        self._threshold = failures
        self._reset = reset_seconds
        self._clock = clock
        self.consecutive_failures = 0
        self._opened_at: float | None = None

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at >= self._reset:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def check(self) -> None:
        """Raise Unavailable while open; in half-open state the next call is the trial."""
        if self.state is BreakerState.OPEN:
            raise Unavailable("circuit open after repeated failures")

    def succeeded(self) -> None:
        self.consecutive_failures = 0
        self._opened_at = None

    def failed(self) -> None:
        self.consecutive_failures += 1
        if self.state is BreakerState.HALF_OPEN or self.consecutive_failures >= self._threshold:
            self._opened_at = self._clock()


@dataclass
class _Waiting:
    """A caller's people waiting for a free request slot, and where their outcomes go."""

    queries: list[Query]
    outcomes: asyncio.Future[list[Outcome]]

    @property
    def purpose(self) -> str:
        return self.queries[0].purpose


class DepartmentClient:
    """One department: at most `concurrency` requests at once. People asked while every slot
    is busy wait, and go together when one frees, up to `people_per_request` a request: the
    members of a household, and under load the people of several households (a batch), are
    asked in one request rather than one each."""

    def __init__(
        self,
        config: DepartmentConfig,
        transport: Transport,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_backoff: float = 2.0,
    ):
        self.config = config
        self._transport = transport
        self._in_flight = 0
        self._waiting: collections.deque[_Waiting] = collections.deque()
        self._requests: set[asyncio.Task[None]] = set()
        self.breaker = CircuitBreaker(
            failures=config.breaker_failures,
            reset_seconds=config.breaker_reset_seconds,
            clock=clock,
        )
        self._max_backoff = max_backoff
        self.calls = 0
        self.failures = 0
        self.last_error: str | None = None

    async def query(self, query: Query) -> Answer:
        """Ask about one person, retrying only what a retry can fix; raise Unavailable,
        Refused or Malformed."""
        (outcome,) = await self.query_many([query])
        if isinstance(outcome, Answer):
            return outcome
        raise outcome

    async def query_many(self, queries: Sequence[Query]) -> list[Outcome]:
        """Ask about several people (one department, one purpose): an outcome per person, in
        order. A failure of a whole request is the outcome of every person it asked about."""
        if not queries:
            return []
        size = max(1, self.config.people_per_request)
        if len(queries) > size:
            parts = await asyncio.gather(
                *(self.query_many(queries[i : i + size]) for i in range(0, len(queries), size))
            )
            return [outcome for part in parts for outcome in part]
        waiting = _Waiting(list(queries), asyncio.get_running_loop().create_future())
        self._waiting.append(waiting)
        self._dispatch()
        return await waiting.outcomes

    def _dispatch(self) -> None:
        """Send what waits while a slot is free: the longest waiting people, with those behind
        them asked for the same purpose (a request carries one), as many as a request takes."""
        size = max(1, self.config.people_per_request)
        while self._in_flight < self.config.concurrency and self._waiting:
            taken: list[_Waiting] = []
            people = 0
            left: collections.deque[_Waiting] = collections.deque()
            while self._waiting and people < size:
                waiting = self._waiting.popleft()
                if waiting.outcomes.done():  # its caller was cancelled meanwhile
                    continue
                if not taken or (
                    waiting.purpose == taken[0].purpose and people + len(waiting.queries) <= size
                ):
                    taken.append(waiting)
                    people += len(waiting.queries)
                else:
                    left.append(waiting)
            self._waiting.extendleft(reversed(left))
            if taken:
                self._in_flight += 1
                request = asyncio.create_task(self._request(taken))
                self._requests.add(request)
                request.add_done_callback(self._requests.discard)

    async def _request(self, taken: list[_Waiting]) -> None:
        queries = [query for waiting in taken for query in waiting.queries]
        try:
            outcomes = await self._ask(queries)
        except asyncio.CancelledError:
            for waiting in taken:
                waiting.outcomes.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - not a department's answer: each caller's error
            for waiting in taken:
                if not waiting.outcomes.done():
                    waiting.outcomes.set_exception(exc)
            return
        finally:
            self._in_flight -= 1
            self._dispatch()
        start = 0
        for waiting in taken:
            end = start + len(waiting.queries)
            if not waiting.outcomes.done():
                waiting.outcomes.set_result(outcomes[start:end])
            start = end

    async def _ask(self, queries: list[Query]) -> list[Outcome]:
        """One request about these people (one person: the query of one), retried as one."""
        timeout = self.config.timeout_seconds
        outcomes: list[Outcome]
        try:
            if len(queries) == 1:
                send, (query,) = self._transport.send, queries
                outcomes = [await self._exchange(lambda: send(query, timeout=timeout))]
            else:
                send_many = self._transport.send_many
                outcomes = await self._exchange(lambda: send_many(queries, timeout=timeout))
        except (Unavailable, Refused, Malformed) as exc:
            return [exc] * len(queries)
        for n, (query, outcome) in enumerate(zip(queries, outcomes, strict=True)):
            if isinstance(outcome, Answer) and not _bound(outcome, query):
                outcomes[n] = Malformed(
                    "the answer is bound to another request (request hash differs)"
                )
        return outcomes

    async def _exchange(self, send: Callable[[], Awaitable[T]]) -> T:
        """One request through the breaker and the retries."""
        self.breaker.check()
        self.calls += 1
        try:
            result = await self._send_with_retries(send)
        except Unavailable as exc:
            self.failures += 1
            self.last_error = str(exc)
            self.breaker.failed()
            raise
        except Exception as exc:
            # Refused or malformed: the department is up, the answer is the problem.
            self.failures += 1
            self.last_error = str(exc)
            self.breaker.succeeded()
            raise
        self.breaker.succeeded()
        return result

    async def _send_with_retries(self, send: Callable[[], Awaitable[T]]) -> T:
        if self.config.retries == 0:
            # Straight to the transport: tenacity's machinery per query costs CPU the
            # department path cannot spare (bench/verification.py).
            return await send()
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.config.retries + 1),
            wait=wait_random_exponential(multiplier=0.1, max=self._max_backoff),
            retry=retry_if_exception_type(Unavailable),  # never a 4xx or a malformed body
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await send()
        raise AssertionError("unreachable")  # pragma: no cover

    def health(self) -> dict[str, Any]:
        return {
            "department": self.config.code,
            "transport": self.config.transport,
            "circuit": self.breaker.state.value,
            "consecutive_failures": self.breaker.consecutive_failures,
            "calls": self.calls,
            "failures": self.failures,
            "last_error": self.last_error,
        }


def _bound(answer: Answer, query: Query) -> bool:
    """Whether the answer is to this query (a department that echoes no hash binds none)."""
    return answer.echoed_hash is None or answer.echoed_hash == query.request_hash
