"""One department's client: concurrency limit, retries with jittered backoff for transient
failures only, a circuit breaker, and the live health `GET /v1/departments` shows."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from services.verification.adapters.transport import (
    Answer,
    Malformed,
    Query,
    Transport,
    Unavailable,
)


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


class DepartmentClient:
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
        self._semaphore = asyncio.Semaphore(config.concurrency)
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
        """Ask once, retrying only what a retry can fix; raise Unavailable, Refused or Malformed."""
        self.breaker.check()
        async with self._semaphore:
            self.calls += 1
            try:
                answer = await self._send_with_retries(query)
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
        if answer.echoed_hash is not None and answer.echoed_hash != query.request_hash:
            raise Malformed("the answer is bound to another request (request hash differs)")
        return answer

    async def _send_with_retries(self, query: Query) -> Answer:
        if self.config.retries == 0:
            # Straight to the transport: tenacity's machinery per query costs CPU the
            # department path cannot spare (bench/verification.py).
            return await self._transport.send(query, timeout=self.config.timeout_seconds)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.config.retries + 1),
            wait=wait_random_exponential(multiplier=0.1, max=self._max_backoff),
            retry=retry_if_exception_type(Unavailable),  # never a 4xx or a malformed body
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._transport.send(query, timeout=self.config.timeout_seconds)
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
