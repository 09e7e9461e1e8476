"""The cluster test's pieces: three NATS nodes, a front for a service's replicas, a client that
retries as a department system would, and the write latencies it saw in each phase."""

from __future__ import annotations

import asyncio
import itertools
import re
import statistics
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from shared.natsserver import NatsServer, free_port

GIVE_UP_SECONDS = 90.0  # a department system retries a write this long before it gives up
RETRY_SECONDS = 0.2
# What a client retries with the same request: not reached, gone, or refused for now.
RETRIED_STATUSES = frozenset({500, 502, 503, 504})
_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# What /metrics says of events: committed not yet published, and delivered not yet handled.
WATCHED = ("bangfu_outbox_backlog", "bangfu_consumer_lag")


class NatsCluster:
    """Three nats-servers clustered on loopback, each with its own JetStream store."""

    def __init__(self, directory: Path, size: int = 3):
        cluster_ports = [free_port() for _ in range(size)]
        self.nodes = [
            NatsServer(
                port=free_port(),
                store_dir=directory / f"node{i}",
                log_file=directory / f"node{i}.log",
                server_name=f"node{i}",
                cluster_port=cluster_ports[i],
                routes=[port for j, port in enumerate(cluster_ports) if j != i],
            )
            for i in range(size)
        ]

    @property
    def url(self) -> str:
        """`BANGFU_NATS_URL` for the services: every node, comma-separated."""
        return ",".join(node.url for node in self.nodes)

    def start(self) -> None:
        for node in self.nodes:
            node.start()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class RoundRobinFront:
    """A TCP front for a service's replicas, as a Kubernetes Service is: each connection goes
    to the next replica that accepts it, so the services' calls to the registry outlive one
    replica. Runs its own event loop in a daemon thread."""

    def __init__(self, ports: Sequence[int]):
        self.port = free_port()
        self._upstreams = itertools.cycle(ports)
        self._tries = len(ports)
        self._loop = asyncio.new_event_loop()
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        started.wait(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._forward, "127.0.0.1", self.port)
        )
        started.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(self._tries):
            try:
                upstream_reader, upstream_writer = await asyncio.open_connection(
                    "127.0.0.1", next(self._upstreams)
                )
            except OSError:
                continue  # that replica is gone: the next one
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
            return
        writer.close()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except OSError:
        pass  # the other side went away: the client sees its connection closed
    finally:
        writer.close()


@dataclass
class Phases:
    """The phases of the test in order, and each write's start and end: a write counts in every
    phase it overlapped, so the one caught by a fault that began after it counts there too."""

    marks: list[tuple[str, float]] = field(default_factory=lambda: [("steady", time.monotonic())])
    # (start, end, what: the method, the route and how many tries it took)
    writes: list[tuple[float, float, str]] = field(default_factory=list)
    # (when, metric, value): what the services' /metrics said, summed over the replicas.
    gauges: list[tuple[float, str, float]] = field(default_factory=list)

    def enter(self, name: str) -> None:
        self.marks.append((name, time.monotonic()))

    def summary(self) -> list[str]:
        lines = []
        ends = [start for _, start in self.marks[1:]] + [float("inf")]
        for (name, began), ended in zip(self.marks, ends, strict=True):
            overlapping = sorted(
                (b - a, what) for a, b, what in self.writes if a < ended and b > began
            )
            if not overlapping:
                continue
            seconds = [taken for taken, _ in overlapping]
            p50 = statistics.median(seconds)
            p99 = seconds[min(len(seconds) - 1, round(0.99 * (len(seconds) - 1)))]
            peaks = {
                metric: max(
                    (v for t, m, v in self.gauges if m == metric and began <= t < ended), default=0
                )
                for metric in WATCHED
            }
            lines.append(
                f"write latency, {name}: p50 {p50 * 1000:.0f} ms, "
                f"p99 {p99 * 1000:.0f} ms, max {seconds[-1] * 1000:.0f} ms "
                f"({len(seconds)} writes, the slowest {overlapping[-1][1]}); peak "
                + ", ".join(f"{metric} {value:g}" for metric, value in peaks.items())
            )
        return lines

    async def watch(self, http: httpx.AsyncClient, ports: Sequence[int]) -> None:
        """Every half second, the outbox backlog and consumer lag the replicas export (the
        dashboard's "Events" row), summed over those that answer."""
        while True:
            answers = await asyncio.gather(
                *(http.get(f"http://127.0.0.1:{port}/metrics") for port in ports),
                return_exceptions=True,
            )
            now = time.monotonic()
            totals = dict.fromkeys(WATCHED, 0.0)
            for answer in answers:
                if isinstance(answer, httpx.Response) and answer.status_code == 200:
                    for line in answer.text.splitlines():
                        metric = line.split("{")[0].split(" ")[0]
                        if metric in totals:
                            totals[metric] += float(line.rsplit(" ", 1)[1])
            self.gauges += [(now, metric, value) for metric, value in totals.items()]
            await asyncio.sleep(0.5)


@dataclass(frozen=True)
class Answer:
    response: httpx.Response
    # Tries whose outcome the client cannot know: the connection broke after sending, or a 5xx
    # came back (a replica may commit, then lose PostgreSQL before it answers).
    unknown_outcomes: int


class DepartmentClient:
    """Writes to a service's replicas in turn; a write not answered, or answered 5xx, is sent
    again (to the next replica) with the same body and headers until it is answered."""

    def __init__(self, http: httpx.AsyncClient, ports: Sequence[int], token: str, phases: Phases):
        self._http = http
        self._ports = itertools.cycle(ports)
        self._headers = {"Authorization": f"Bearer {token}"}
        self._phases = phases
        self.retries = 0
        self.unknown_outcomes = 0

    async def write(
        self,
        method: str,
        path: str,
        *,
        body: Any,
        headers: dict[str, str] | None = None,
        measured: bool = True,
    ) -> Answer:
        started = time.monotonic()
        unknown = tries = 0
        while True:
            tries += 1
            url = f"http://127.0.0.1:{next(self._ports)}{path}"
            try:
                response = await self._http.request(
                    method, url, json=body, headers={**self._headers, **(headers or {})}
                )
            except httpx.ConnectError:
                pass  # never sent
            except httpx.TransportError:
                unknown += 1
            else:
                if response.status_code not in RETRIED_STATUSES:
                    if measured:
                        route = _ID.sub("{id}", path)
                        what = f"{method} {route}, {tries} tries"
                        self._phases.writes.append((started, time.monotonic(), what))
                    self.unknown_outcomes += unknown
                    return Answer(response, unknown)
                unknown += 1
            if time.monotonic() - started > GIVE_UP_SECONDS:
                raise AssertionError(f"{method} {path}: no answer in {GIVE_UP_SECONDS:.0f}s")
            self.retries += 1
            await asyncio.sleep(RETRY_SECONDS)

    async def read(self, path: str) -> httpx.Response:
        answer = await self.write("GET", path, body=None, measured=False)
        return answer.response


def new_key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}
