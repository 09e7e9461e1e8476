"""JSON logs with request and trace ids, Prometheus metrics, and W3C trace context.

Tracing is OpenTelemetry's: FastAPI's SERVER span per request, a PRODUCER span per event
the outbox relay publishes and a CONSUMER span per event handled, all joined by the
`traceparent` carried in HTTP headers, in NATS headers and in the CloudEvent itself. Spans are
exported over OTLP when `BANGFU_TRACING_OTLP_ENDPOINT` is set; otherwise none is recorded, but
a traceparent is still made and passed on, so that the logs and events of one household's
journey share a trace id.
"""

from __future__ import annotations

import logging
import re
import secrets
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TextIO

import structlog
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_current_traceparent: ContextVar[str | None] = ContextVar("traceparent", default=None)
_propagator = TraceContextTextMapPropagator()
_tracer = trace.get_tracer("bangfu")  # a proxy: follows whichever provider is set later

# Per process, not per app: a process's service tokens serve all its registry clients (see
# shared/tokens.py); every service's registry publishes this one counter.
SERVICE_TOKEN_FETCHES = Counter(
    "bangfu_service_token_fetches",
    "Service-to-service token fetches from the identity provider, by client and outcome: ok, "
    "refused (by the provider), unavailable (provider unreachable), rejected (a fresh token "
    "the called service refused with 401)",
    ["client", "outcome"],
    registry=None,
)


def new_traceparent(trace_id: str | None = None) -> str:
    """A W3C traceparent with a new span id (and a new trace id unless one is given)."""
    return f"00-{trace_id or secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def trace_id_of(traceparent: str | None) -> str | None:
    match = _TRACEPARENT.match(traceparent or "")
    return match.group(1) if match else None


def current_traceparent() -> str | None:
    """The traceparent of the request or message being handled, for events it causes."""
    return _current_traceparent.get()


def set_current_traceparent(traceparent: str | None) -> None:
    _current_traceparent.set(traceparent)
    structlog.contextvars.bind_contextvars(trace_id=trace_id_of(traceparent))


class TracingSettings(BaseSettings):
    """Where spans go, from `BANGFU_TRACING_*` variables; unset endpoint means no export."""

    model_config = SettingsConfigDict(env_prefix="BANGFU_TRACING_", extra="ignore")

    # An OTLP/HTTP traces endpoint, e.g. http://otel-collector:4318/v1/traces.
    otlp_endpoint: str | None = None
    # Of traces started here (not continued from a caller), the share recorded.
    sample_ratio: float = 1.0


_tracing_configured = False


def configure_tracing(service: str, settings: TracingSettings | None = None) -> bool:
    """Export this process's spans over OTLP when an endpoint is set; True if it now does.

    One tracer provider per process (OpenTelemetry allows only one), named after the
    service: in production a process runs one service.
    """
    global _tracing_configured
    settings = settings or TracingSettings()
    if not settings.otlp_endpoint or _tracing_configured:
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(
        resource=Resource.create({"service.name": f"bangfu-{service}"}),
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(settings.otlp_endpoint)))
    trace.set_tracer_provider(provider)
    _tracing_configured = True
    return True


def traceparent_context(traceparent: str | None) -> Context:
    """The OpenTelemetry context a traceparent continues (empty: a new trace)."""
    return _propagator.extract({"traceparent": traceparent} if traceparent else {})


def traceparent_of(span: Span, parent: str | None = None) -> str:
    """The span's W3C traceparent; when it is not recorded (tracing off), a new span id in
    `parent`'s trace (or a new trace), so the trace id still follows the household."""
    if span.is_recording():
        carrier: dict[str, str] = {}
        _propagator.inject(carrier, trace.set_span_in_context(span))
        return carrier["traceparent"]
    return new_traceparent(trace_id_of(parent))


@contextmanager
def span(
    name: str,
    *,
    kind: SpanKind,
    parent: str | None,
    attributes: Mapping[str, str | int] | None = None,
) -> Iterator[tuple[Span, str]]:
    """A span continuing `parent` (a traceparent), and the traceparent to pass on from it.

    With no tracer provider set (tracing off, the default), no span is started: OpenTelemetry's
    no-op tracer took 33 µs a span here, which the relay pays for each event it publishes and
    a consumer for each it handles (4.6 % of the verification service's CPU in a batch).
    """
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        yield trace.INVALID_SPAN, new_traceparent(trace_id_of(parent))
        return
    with _tracer.start_as_current_span(
        name, context=traceparent_context(parent), kind=kind, attributes=attributes
    ) as current:
        yield current, traceparent_of(current, parent)


def configure_logging(
    *, level: str = "INFO", json: bool = True, stream: TextIO | None = None
) -> None:
    """structlog to stdout, one JSON object a line, carrying the bound request context."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if json
        else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stdout),
        # Not cached: module-level loggers must follow a later reconfiguration.
        cache_logger_on_first_use=False,
    )


class Metrics:
    """A service's Prometheus metrics, in a registry of its own (several apps share a test)."""

    def __init__(self, service: str):
        self.registry = CollectorRegistry()
        self.registry.register(SERVICE_TOKEN_FETCHES)
        labels = {"service": service}
        self.requests = Counter(
            "bangfu_http_requests",
            "HTTP requests handled",
            ["method", "route", "status"],
            registry=self.registry,
        ).labels
        self.latency = Histogram(
            "bangfu_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        ).labels
        self.outbox_backlog = Gauge(
            "bangfu_outbox_backlog",
            "Events written but not yet published",
            ["service"],
            registry=self.registry,
        ).labels(**labels)
        self.outbox_oldest_age = Gauge(
            "bangfu_outbox_oldest_age_seconds",
            "Age of the oldest unpublished event",
            ["service"],
            registry=self.registry,
        ).labels(**labels)
        self.consumer_lag = Gauge(
            "bangfu_consumer_lag",
            "Messages pending or awaiting ack on a durable consumer",
            ["consumer"],
            registry=self.registry,
        ).labels


class RequestContextMiddleware:
    """Binds request id and trace context, echoes them, logs the request, records metrics."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics):
        self.app = app
        self.metrics = metrics
        self.log = structlog.get_logger("bangfu.request")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = headers.get("x-request-id") or secrets.token_hex(8)
        # FastAPI's own telemetry opened the SERVER span (continuing the caller's traceparent)
        # around this middleware; with tracing off, only the caller's trace id is kept.
        server_span = trace.get_current_span()
        traceparent = traceparent_of(server_span, headers.get("traceparent"))
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        set_current_traceparent(traceparent)
        status = 500
        started = time.perf_counter()

        async def send_with_ids(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode()),
                    (b"traceparent", traceparent.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_ids)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            self.metrics.requests(method=method, route=route, status=str(status)).inc()
            self.metrics.latency(method=method, route=route).observe(elapsed)
            if route not in ("/healthz", "/readyz", "/metrics"):
                self.log.info(
                    "request",
                    method=method,
                    path=scope["path"],
                    status=status,
                    ms=round(elapsed * 1000, 2),
                )
