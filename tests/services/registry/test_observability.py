"""Request id and trace context through a request, its JSON log line and the event it causes."""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import httpx
import nats

from shared.observability import configure_logging, new_traceparent, trace_id_of
from tests.helpers import bearer, household_body

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


class TestTraceContext:
    def test_a_new_traceparent_keeps_the_trace_and_makes_a_new_span(self) -> None:
        incoming = f"00-{TRACE}-00f067aa0ba902b7-01"
        child = new_traceparent(trace_id_of(incoming))
        assert trace_id_of(child) == TRACE
        assert child != incoming
        assert trace_id_of("garbage") is None
        assert trace_id_of(new_traceparent()) != TRACE

    async def test_the_request_id_and_trace_reach_the_response_the_log_and_the_event(
        self, registry: httpx.AsyncClient, token: Callable[..., str], nats_url: str
    ) -> None:
        logs = io.StringIO()
        configure_logging(json=True, stream=logs)
        nc = await nats.connect(nats_url)
        sub = await nc.subscribe("bangfu.registry.household.applied.>")
        response = await registry.post(
            "/v1/households",
            json=household_body(),
            headers={
                **bearer(token("registry:write", client_id="民政")),
                "traceparent": f"00-{TRACE}-00f067aa0ba902b7-01",
                "X-Request-ID": "req-42",
            },
        )
        event = json.loads((await sub.next_msg(timeout=5)).data)
        await nc.close()
        configure_logging(json=True)

        assert response.status_code == 201
        assert response.headers["x-request-id"] == "req-42"
        assert trace_id_of(response.headers["traceparent"]) == TRACE
        assert trace_id_of(event["traceparent"]) == TRACE
        lines = [json.loads(line) for line in logs.getvalue().splitlines()]
        [request_line] = [line for line in lines if line["event"] == "request"]
        assert request_line["request_id"] == "req-42"
        assert request_line["trace_id"] == TRACE
        assert request_line["client_id"] == "民政"
        assert request_line["status"] == 201
        assert request_line["level"] == "info"
        assert "timestamp" in request_line
