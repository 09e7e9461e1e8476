"""Benchmark of verification (核对): one household's latency, a batch's throughput.

Run: `.venv/bin/python bench/verification.py [--households N] [--concurrency C]
[--latency-ms L] [--transport {http,nats}] [--database {sqlite,postgres}]
[--people-per-request P]`. Not a test: it asserts nothing and prints figures (about 5
minutes with the defaults on 2 cores).

Everything runs for real, each in a process of its own on loopback: a nats-server from the
wheel, the department sandbox with every department at a fixed latency L (50 ms), the registry
and the verification service (uvicorn, SQLite files or one PostgreSQL database).

The sandbox answers each request L after it arrived (its bytes were read), its own work
included (as a department's latency does). A department is asked about up to P people in one
request (20, the service's default `people_per_request`): a household's members together, and
people who wait for one of its C request slots go together when one frees.
`--people-per-request 1` asks one person a request, for a department that answers no other
way.

1. One household of 4 members × 11 departments, every member consented: the time from
   `POST /v1/verifications` to the `verification.completed` event on NATS (the report is
   stored and announced), median of 20. single_ratio = that time / L (the slowest
   department's latency; goal at most 1.3). For context, the same 44 questions asked straight
   from this process with the service's department clients, a department's 4 together (no
   service, no database). How fast the machine ran plain Python before and after is printed
   beside it: on a virtual machine the same code's figures move with it.
2. A batch (批量核对) of N households (10,000) of one member each, filed in the registry with
   consents recorded, every department limited to C concurrent requests (8). One person a
   request, those limits allow C / L households per second (each household asks every
   department once; the departments work in parallel): ratio = households/s / C / L (goal at
   least 0.8). People asked together raise that limit P-fold; the raw client shows what is
   left of it on this machine: it asks the sandbox the same questions through the same
   clients and limits, with no service at all. The CPU time each process (/proc) spent over
   the batch is printed per household.

The last line is `ratio <batch ratio> single_ratio <x> households/s <n>`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import AsyncIterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import nats
from sqlalchemy import text

from services.verification.adapters.client import DepartmentClient, DepartmentConfig
from services.verification.adapters.transport import HttpTransport, NatsTransport, Query
from services.verification.domain.departments import Department
from shared.auth import ensure_signing_key, issue_token
from shared.db import create_engine
from shared.identity import check_character
from shared.migrations import upgrade
from shared.natsserver import NatsServer, die_with_parent, free_port

ROOT = Path(__file__).resolve().parents[1]
POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
DEPARTMENTS = [d.value for d in Department]


def identity(n: int) -> str:
    """A distinct valid number for each n (serials 100–999 per birth date)."""
    birth = date(1950, 1, 1) + timedelta(days=n // 900)
    body = f"411302{birth:%Y%m%d}{n % 900 + 100:03d}"
    return body + check_character(body)


class Suite:
    """The processes the bench talks to, and a token for it."""

    def __init__(self, args: argparse.Namespace, home: Path):
        self.args, self.home = args, home
        self.nats = NatsServer(
            port=free_port(), store_dir=home / "nats", log_file=home / "nats.log"
        )
        self.ports = {name: free_port() for name in ("sandbox", "registry", "verification")}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.schemas: list[str] = []

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def env(self) -> dict[str, str]:
        args = self.args
        department = {
            "concurrency": args.concurrency,
            "timeout_seconds": 10,
            "retries": 0,
            "people_per_request": args.people_per_request,
        }
        env = {
            **os.environ,
            "BANGFU_HOME": str(self.home),
            "BANGFU_NATS_URL": self.nats.url,
            "BANGFU_RATE_LIMIT_PER_SECOND": "0",
            "BANGFU_LOG_LEVEL": "WARNING",
            "BANGFU_SANDBOX_PORT": str(self.ports["sandbox"]),
            "BANGFU_SANDBOX_NATS_URL": self.nats.url,
            "BANGFU_SANDBOX_FAULTS": json.dumps(
                {d: {"latency_ms": {"fixed": args.latency_ms}} for d in DEPARTMENTS}
            ),
            "BANGFU_REGISTRY_PORT": str(self.ports["registry"]),
            "BANGFU_VERIFICATION_PORT": str(self.ports["verification"]),
            "BANGFU_VERIFICATION_REGISTRY_URL": self.url("registry"),
            "BANGFU_VERIFICATION_DEPARTMENTS_URL": self.url("sandbox"),
            "BANGFU_VERIFICATION_DEPARTMENTS_TRANSPORT": args.transport,
            "BANGFU_VERIFICATION_DEPARTMENTS": json.dumps(dict.fromkeys(DEPARTMENTS, department)),
            "BANGFU_VERIFICATION_PROGRESS_EVERY": "500",
        }
        for service in ("registry", "verification"):
            url, schema = self.database(service)
            env[f"BANGFU_{service.upper()}_DATABASE_URL"] = url
            if schema:
                env[f"BANGFU_{service.upper()}_DATABASE_SCHEMA"] = schema
        return env

    def database(self, service: str) -> tuple[str, str | None]:
        if self.args.database == "postgres":
            return POSTGRES, f"bench_verification_{service}_{os.getpid()}"
        return f"sqlite+aiosqlite:///{self.home / (service + '.db')}", None

    def start(self, name: str, module: str) -> None:
        log = open(self.home / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", module],
            env=self.env(),
            stdout=log,
            stderr=log,
            cwd=ROOT,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url(name)}/healthz", timeout=1).status_code == 200:
                    return
            if self.processes[name].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start; see {self.home / (name + '.log')}")
            time.sleep(0.1)

    def cpu_seconds(self) -> dict[str, float]:
        """The CPU seconds each of the suite's processes has spent so far."""
        return {name: cpu_seconds(process.pid) for name, process in sorted(self.processes.items())}

    def failed_attempts(self) -> int:
        """Runs' attempts that failed so far (each retried later, seconds on): a batch slowed
        by them measures the retries, not the path."""
        log = (self.home / "verification.log").read_text(errors="replace")
        return log.count('"verification.attempt_failed"')

    def stop(self, name: str) -> None:
        process = self.processes.pop(name)
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:  # a graceful shutdown waiting on idle connections
            process.kill()
            process.wait()

    def token(self) -> str:
        signing, public = self.home / "jwt-signing-key.pem", self.home / "jwt-signing-key.pub.pem"
        ensure_signing_key(signing, public)
        return issue_token(
            signing.read_bytes(),
            client_id="bench",
            scopes=["verification:request", "registry:write", "registry:read"],
            regions=["41"],
            issuer="bangfu-dev",
            audience="bangfu",
        )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Suite]:
        self.nats.start()
        try:
            for service in ("registry", "verification"):
                url, schema = self.database(service)
                if schema:
                    self.schemas.append(schema)
                await asyncio.to_thread(upgrade, service, url=url, schema=schema)
            self.start("sandbox", "sandbox")
            self.start("registry", "services.registry")
            self.start("verification", "services.verification")
            yield self
        finally:
            for name in list(self.processes):
                self.stop(name)
            self.nats.stop()
            if self.schemas:
                await drop_schemas(self.schemas)


async def drop_schemas(schemas: list[str]) -> None:
    engine = create_engine(POSTGRES)
    async with engine.begin() as connection:
        for schema in schemas:
            await connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    await engine.dispose()


async def consent_all(
    client: httpx.AsyncClient, numbers: list[str], headers: dict[str, str]
) -> None:
    gate = asyncio.Semaphore(16)

    async def one(number: str) -> None:
        async with gate:
            response = await client.post(
                "/v1/consents",
                headers=headers,
                json={
                    "identity_number": number,
                    "region": "411302",
                    "signed_by": "张三明",
                    "signed_on": (date.today() - timedelta(days=1)).isoformat(),
                    "expires_on": (date.today() + timedelta(days=365)).isoformat(),
                    "document_ref": f"bench-{number[-8:]}",
                },
            )
            response.raise_for_status()

    await asyncio.gather(*(one(n) for n in numbers))


async def file_all(
    client: httpx.AsyncClient, numbers: list[str], headers: dict[str, str]
) -> list[str]:
    gate = asyncio.Semaphore(16)

    async def one(number: str) -> str:
        async with gate:
            response = await client.post(
                "/v1/households",
                headers=headers,
                json={
                    "location": {"region": "411302", "address": "建设路12号"},
                    "category": "dibao",
                    "causes": ["illness"],
                    "members": [{"name": "张三明", "identity_number": number, "relation": "head"}],
                },
            )
            response.raise_for_status()
            household_id: str = response.json()["id"]
            return household_id

    return list(await asyncio.gather(*(one(n) for n in numbers)))


@contextlib.asynccontextmanager
async def completions(nats_url: str) -> AsyncIterator[dict[str, asyncio.Future[float]]]:
    """Futures keyed by verification id, resolved at the arrival of its completed event.

    An event may arrive before its POST's answer is read (a slow turn of the bench's loop):
    its future is made then, resolved, for the round to find.
    """
    waiting: dict[str, asyncio.Future[float]] = {}
    nc = await nats.connect(nats_url)
    loop = asyncio.get_running_loop()

    async def on_message(message: Any) -> None:
        event = json.loads(message.data)
        future = waiting.setdefault(event["subject"], loop.create_future())
        if not future.done():
            future.set_result(time.perf_counter())

    await nc.subscribe("bangfu.verification.verification.completed.>", cb=on_message)
    try:
        yield waiting
    finally:
        await nc.close()


async def single(suite: Suite, headers: dict[str, str], repeats: int) -> tuple[float, float]:
    """Median seconds from POST to the completed event, and of the bare 44 queries; prints the
    CPU each process spent a household (less noisy than the time on a busy machine)."""
    loop = asyncio.get_running_loop()
    numbers = [identity(900_000 + n) for n in range(4)]
    body = {
        "members": [{"member_id": f"m{i}", "identity_number": n} for i, n in enumerate(numbers)],
        "region": "411302",
        "purpose": "bench",
    }
    times = []
    async with (
        httpx.AsyncClient(base_url=suite.url("verification"), timeout=30) as client,
        completions(suite.nats.url) as waiting,
    ):
        await consent_all(client, numbers, headers)
        cpu = suite.cpu_seconds()
        for round_ in range(3 + repeats):
            if round_ == 3:  # warm-up done
                cpu = suite.cpu_seconds()
            started = time.perf_counter()
            response = await client.post("/v1/verifications", json=body, headers=headers)
            response.raise_for_status()
            future = waiting.setdefault(response.json()["id"], loop.create_future())
            finished = await asyncio.wait_for(future, 30)
            if round_ >= 3:
                times.append(finished - started)
        used = {name: s - cpu[name] for name, s in suite.cpu_seconds().items()}
    print(
        "  one household, CPU per household (ms): "
        + ", ".join(f"{name} {1000 * s / max(1, repeats):.1f}" for name, s in used.items())
    )

    bare = []
    async with bare_clients(suite) as clients:
        for _ in range(max(1, repeats // 2)):
            started = time.perf_counter()
            await asyncio.gather(
                *(
                    clients[d].query_many([Query(d, n, "bench-consent", "bench") for n in numbers])
                    for d in DEPARTMENTS
                )
            )
            bare.append(time.perf_counter() - started)
    return statistics.median(times), statistics.median(bare)


@contextlib.asynccontextmanager
async def bare_clients(suite: Suite) -> AsyncIterator[dict[str, DepartmentClient]]:
    """The service's department clients, in this process, on the chosen transport: as the
    service has them (`services.verification.worker.Departments`), a connection pool per
    department as large as its concurrency limit."""
    limit = suite.args.concurrency
    config = {
        "concurrency": limit,
        "timeout_seconds": 30,
        "retries": 0,
        "people_per_request": suite.args.people_per_request,
    }
    nc = await nats.connect(suite.nats.url)
    async with contextlib.AsyncExitStack() as stack:
        clients = {}
        for d in DEPARTMENTS:
            transport: HttpTransport | NatsTransport
            if suite.args.transport == "nats":
                transport = NatsTransport(nc)
            else:
                http = await stack.enter_async_context(HttpTransport.session(connections=limit))
                transport = HttpTransport(http, suite.url("sandbox"))
            clients[d] = DepartmentClient(DepartmentConfig(d, **config), transport)
        yield clients
    await nc.close()


async def raw_batch(suite: Suite, numbers: list[str]) -> float:
    """Households per second a bare client gets from the sandbox under the same limits."""
    async with bare_clients(suite) as clients:
        started = time.perf_counter()
        await asyncio.gather(
            *(
                clients[d].query(Query(d, n, "bench-consent", "bench"))
                for n in numbers
                for d in DEPARTMENTS
            )
        )
        return len(numbers) / (time.perf_counter() - started)


def cpu_seconds(pid: int) -> float:
    """The user and system CPU time of a process so far (`/proc/<pid>/stat`)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def batch(suite: Suite, headers: dict[str, str], count: int) -> float:
    """Households per second for a batch of `count` filed, consented households."""
    numbers = [identity(n) for n in range(count)]
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=suite.url("verification"), timeout=60) as client:
        await consent_all(client, numbers, headers)
    # Filing starts a verification per application: file with the verification service
    # stopped and drop those events, so that the batch is the only work it does.
    suite.stop("verification")
    async with httpx.AsyncClient(base_url=suite.url("registry"), timeout=60) as client:
        household_ids = await file_all(client, numbers, headers)
    nc = await nats.connect(suite.nats.url)
    await nc.jetstream().purge_stream("REGISTRY")
    suite.start("verification", "services.verification")
    print(f"  set-up: {count:,} consents and households in {time.perf_counter() - started:.0f} s")

    done = asyncio.get_running_loop().create_future()

    async def on_progress(message: Any) -> None:
        progress = json.loads(message.data)["data"]
        print(
            f"  progress {progress['done'] + progress['failed']:,}/{progress['total']:,} "
            f"at {progress['rate_per_second']:.1f}/s",
            flush=True,
        )
        if progress["status"] != "running" and not done.done():
            done.set_result((time.perf_counter(), progress))

    await nc.subscribe("bangfu.verification.batch.progress.>", cb=on_progress)
    cpu = suite.cpu_seconds()
    failed_before = suite.failed_attempts()
    async with httpx.AsyncClient(base_url=suite.url("verification"), timeout=120) as client:
        began = time.perf_counter()
        response = await client.post(
            "/v1/batches",
            json={"region": "411302", "household_ids": household_ids, "purpose": "bench"},
            headers=headers,
        )
        response.raise_for_status()
        finished, progress = await asyncio.wait_for(done, 3600)
    used = {name: seconds - cpu[name] for name, seconds in suite.cpu_seconds().items()}
    await nc.close()
    print(
        f"  batch: done {progress['done']:,}, failed {progress['failed']:,}; "
        f"attempts failed and retried later {suite.failed_attempts() - failed_before:,}"
    )
    print(
        "  CPU per household (ms): "
        + ", ".join(f"{name} {1000 * used[name] / count:.1f}" for name in used)
    )
    return count / (finished - began)


def python_speed_us() -> float:
    """Microseconds for `sum(range(1000))`, the best of 5: how fast this machine runs plain
    Python right now. A virtual machine's host that slows it (by half, seen on stop 59) shows
    here and not in the load average, and a single household's milliseconds move with it.
    Read before and after, it brackets the single households: a slow spell between the two
    readings does not show."""
    loops = 20_000
    return min(timeit.repeat("sum(range(1000))", repeat=5, number=loops)) / loops * 1e6


async def bench(args: argparse.Namespace) -> None:
    speed_before = python_speed_us()
    with tempfile.TemporaryDirectory(prefix="bangfu-bench-verification-") as tmp:
        suite = Suite(args, Path(tmp))
        async with suite.running():
            headers = {"Authorization": f"Bearer {suite.token()}"}
            latency = args.latency_ms / 1000
            print(
                f"departments: 11 at {args.latency_ms} ms, limit {args.concurrency} requests "
                f"each, up to {args.people_per_request} people a request, "
                f"{args.transport}, {args.database}"
            )
            one, bare = await single(suite, headers, args.repeats)
            single_ratio = one / latency
            print(
                f"1. one household, 4 members × 11 departments: {one * 1000:.1f} ms POST → "
                f"completed event (median of {args.repeats}); "
                f"bare 44 questions {bare * 1000:.1f} ms; "
                f"single_ratio {single_ratio:.2f} (goal ≤ 1.3)"
            )
            print(
                f"  plain Python, sum(range(1000)): {speed_before:.1f} µs before the suite "
                f"started, {python_speed_us():.1f} µs after the single households"
            )
            limit = args.concurrency / latency
            raw = await raw_batch(
                suite, [identity(500_000 + n) for n in range(min(args.households, 2000))]
            )
            rate = await batch(suite, headers, args.households)
            ratio = rate / limit
            print(
                f"2. batch of {args.households:,}: {rate:.1f} households/s; one person a "
                f"request, the limit C / L = {limit:.0f}/s; a bare client under the same limits "
                f"{raw:.1f}/s; "
                f"ratio {ratio:.2f} (goal ≥ 0.8), to the bare client {rate / raw:.2f}"
            )
            print(f"ratio {ratio:.2f} single_ratio {single_ratio:.2f} households/s {rate:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--households", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=20, help="single households timed")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--transport", choices=["http", "nats"], default="http")
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument(
        "--people-per-request", type=int, default=20, help="people a department request asks"
    )
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
