"""The verification service's own Prometheus metrics (names as docs/operations.md lists them)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.verification.adapters.client import BreakerState, CircuitBreaker
from services.verification.checking import Checked
from services.verification.worker import Departments

_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class VerificationMetrics:
    def __init__(self, registry: CollectorRegistry, departments: Departments):
        up = Gauge(
            "bangfu_department_up",
            "1 while a department answers, 0 while its circuit is open",
            ["department"],
            registry=registry,
        )
        for department, client in departments.clients.items():
            up.labels(department=department.value).set_function(_answering(client.breaker))
        self._duration = Histogram(
            "bangfu_department_request_duration_seconds",
            "A department's answer time (retries included)",
            ["department"],
            buckets=_SECONDS,
            registry=registry,
        )
        self._requests = Counter(
            "bangfu_department_requests",
            "Department queries by outcome (ok, unavailable, error)",
            ["department", "outcome"],
            registry=registry,
        )
        self.verification_duration = Histogram(
            "bangfu_verification_duration_seconds",
            "From request to first report, one household",
            buckets=(*_SECONDS, 60, 300, 3600),
            registry=registry,
        )
        self.completed = Counter(
            "bangfu_verification_completed",
            "Verifications finished, by outcome (completed, failed)",
            ["outcome"],
            registry=registry,
        )

    def record(self, checked: Sequence[Checked]) -> None:
        for exchange in (c.exchange for c in checked):
            if exchange is None:
                continue  # not asked: no consent
            department = exchange.department.value
            self._duration.labels(department=department).observe(exchange.seconds)
            self._requests.labels(department=department, outcome=exchange.outcome.value).inc()


def _answering(breaker: CircuitBreaker) -> Callable[[], float]:
    return lambda: 0.0 if breaker.state is BreakerState.OPEN else 1.0
