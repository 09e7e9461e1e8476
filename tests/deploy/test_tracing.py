"""One trace follows a household: REST call -> outbox -> relay -> NATS -> consumer, and on
through the events that consumer publishes to the next one.

Spans are recorded by the OpenTelemetry SDK's own in-memory exporter, installed as this
process's tracer provider (the same hook an OTLP exporter uses in production).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import httpx
import nats
import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import Attributes

from services.registry.settings import RegistrySettings
from shared.db import Database, UnitOfWork
from shared.events.consumer import ConsumerRunner, Subscription
from shared.events.envelope import CloudEvent, new_event
from shared.observability import TracingSettings, configure_tracing, current_traceparent
from tests.helpers import bearer, household_body

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
APPLIED = "bangfu.registry.household.applied.41.13.02"
PROBED = "bangfu.registry.household.probed.41.13.02"


class Switch(Sampler):
    """Records only while a test here is running: the rest of the session runs as with
    tracing off (OpenTelemetry allows one tracer provider per process, never unset)."""

    on = False

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        *args: Any,
        **kwargs: Any,
    ) -> SamplingResult:
        # The span keeps the attributes the sampler hands back.
        decision = Decision.RECORD_AND_SAMPLE if self.on else Decision.DROP
        return SamplingResult(decision, attributes if self.on else None)

    def get_description(self) -> str:
        return "on while a tracing test runs"


_exporter = InMemorySpanExporter()
_switch = Switch()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider(sampler=_switch)
        provider.add_span_processor(SimpleSpanProcessor(_exporter))
        trace.set_tracer_provider(provider)
    assert trace.get_tracer_provider() is provider, "another tracer provider was set first"
    _exporter.clear()
    _switch.on = True
    try:
        yield _exporter
    finally:
        _switch.on = False
        _exporter.clear()


def consumer_of(span: ReadableSpan) -> object:
    if span.kind != SpanKind.CONSUMER or not span.attributes:
        return None
    return span.attributes.get("messaging.consumer.group.name")


def ids(span: ReadableSpan) -> tuple[str, str, str | None]:
    """(trace id, span id, parent span id) in hex."""
    context = span.get_span_context()
    assert context is not None
    parent = f"{span.parent.span_id:016x}" if span.parent else None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}", parent


async def test_the_trace_id_survives_rest_outbox_relay_nats_and_consumer(
    spans: InMemorySpanExporter,
    registry: httpx.AsyncClient,
    registry_settings: RegistrySettings,
    token: Callable[..., str],
    nats_url: str,
) -> None:
    url, schema = registry_settings.database
    db = Database(url, schema=schema)
    nc = await nats.connect(nats_url)
    raw = await nc.subscribe(APPLIED)
    handled: list[tuple[str, str | None]] = []

    async def handler(event: CloudEvent, uow: UnitOfWork) -> None:
        handled.append((event.id, current_traceparent()))

    relayed: list[str | None] = []

    async def hand_on(event: CloudEvent, uow: UnitOfWork) -> None:
        """A second hop, as a consumer in another service would: publish what follows."""
        uow.publish(
            new_event(
                service="registry",
                aggregate="household",
                name="probed",
                subject=event.subject,
                region=event.region,
                sequence=0,
                data={},
            )
        )
        await uow.commit()

    async def last(event: CloudEvent, uow: UnitOfWork) -> None:
        relayed.append(current_traceparent())

    js = nc.jetstream()
    runners = [
        ConsumerRunner(db, js, Subscription(name, "REGISTRY", [subject], handler_))
        for name, subject, handler_ in (
            ("tracing-probe", "bangfu.registry.household.applied.>", handler),
            ("tracing-relay", "bangfu.registry.household.applied.>", hand_on),
            ("tracing-last", "bangfu.registry.household.probed.>", last),
        )
    ]
    for runner in runners:
        await runner.start()
    try:
        response = await registry.post(
            "/v1/households",
            json=household_body("411302"),
            headers={
                **bearer(token("registry:write", "registry:read")),
                "traceparent": f"00-{TRACE}-{CALLER_SPAN}-01",
            },
        )
        assert response.status_code == 201, response.text
        message = await raw.next_msg(timeout=5)
        for _ in range(200):
            if handled and relayed:
                break
            await asyncio.sleep(0.05)
    finally:
        for runner in runners:
            await runner.stop()
        await nc.close()
        await db.dispose()

    finished = spans.get_finished_spans()
    (server,) = [s for s in finished if s.kind == SpanKind.SERVER and "households" in s.name]
    (producer,) = [s for s in finished if s.name == f"publish {APPLIED}"]
    (consumer,) = [s for s in finished if consumer_of(s) == "tracing-probe"]
    assert server.name == "POST /v1/households"
    # One trace, each span the child of the one before it, the first the caller's child.
    assert ids(server)[0] == ids(producer)[0] == ids(consumer)[0] == TRACE
    assert ids(server)[2] == CALLER_SPAN
    assert ids(producer)[2] == ids(server)[1]
    assert ids(consumer)[2] == ids(producer)[1]
    # The hop itself: the NATS header names the producer span, the CloudEvent its origin.
    event = CloudEvent.from_json(message.data)
    assert message.headers is not None
    assert message.headers["traceparent"] == f"00-{TRACE}-{ids(producer)[1]}-01"
    assert event.traceparent == f"00-{TRACE}-{ids(server)[1]}-01"
    assert response.headers["traceparent"] == event.traceparent
    # And what the handler would stamp on events it publishes continues the consumer span.
    assert handled == [(event.id, f"00-{TRACE}-{ids(consumer)[1]}-01")]
    # The next hop: an event published by a consumer, relayed, consumed again, same trace.
    (hand_on_span,) = [s for s in finished if consumer_of(s) == "tracing-relay"]
    (second_producer,) = [
        s for s in finished if s.name.startswith("publish bangfu.registry.household.probed.")
    ]
    (last_span,) = [s for s in finished if consumer_of(s) == "tracing-last"]
    assert ids(hand_on_span)[2] == ids(producer)[1]
    assert ids(second_producer)[2] == ids(hand_on_span)[1]
    assert ids(last_span)[2] == ids(second_producer)[1]
    assert relayed == [f"00-{TRACE}-{ids(last_span)[1]}-01"]


def test_tracing_is_off_by_default() -> None:
    assert TracingSettings().otlp_endpoint is None
    assert configure_tracing("registry") is False


def test_with_tracing_off_a_span_still_passes_its_parents_trace_on() -> None:
    """In a fresh process, where no tracer provider is set: no span is started, and the
    traceparent passed on keeps the parent's trace id under a new span id."""
    script = (
        "from opentelemetry.trace import SpanKind\n"
        "from shared.observability import span\n"
        f"parent = '00-{TRACE}-{CALLER_SPAN}-01'\n"
        "with span('publish', kind=SpanKind.PRODUCER, parent=parent) as (kept, passed):\n"
        "    print(kept.is_recording(), passed)\n"
        "with span('handle', kind=SpanKind.CONSUMER, parent=None) as (_, new):\n"
        "    print(new)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    recording, passed, new = run.stdout.split()
    assert recording == "False"
    version, trace_id, span_id, flags = passed.split("-")
    assert (version, trace_id, flags) == ("00", TRACE, "01")
    assert len(span_id) == 16 and span_id != CALLER_SPAN
    assert len(new.split("-")[1]) == 32 and new.split("-")[1] != TRACE


class _Collector(BaseHTTPRequestHandler):
    received: list[tuple[str, str, bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_an_otlp_endpoint_receives_the_spans() -> None:
    """In a fresh process (one tracer provider per process): configured by the environment."""
    collector = HTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{collector.server_port}/v1/traces"
    script = (
        "from opentelemetry import trace\n"
        "from opentelemetry.trace import SpanKind\n"
        "from shared.observability import configure_tracing, span\n"
        "assert configure_tracing('registry')\n"
        "with span('POST /v1/households', kind=SpanKind.SERVER, parent=None):\n"
        "    pass\n"
        "trace.get_tracer_provider().shutdown()\n"
    )
    try:
        subprocess.run(
            [sys.executable, "-c", script],
            env={"BANGFU_TRACING_OTLP_ENDPOINT": endpoint, "PATH": ""},
            check=True,
            timeout=60,
        )
    finally:
        collector.shutdown()
        collector.server_close()
    ((path, content_type, body),) = _Collector.received
    assert (path, content_type) == ("/v1/traces", "application/x-protobuf")
    assert b"POST /v1/households" in body and b"bangfu-registry" in body
