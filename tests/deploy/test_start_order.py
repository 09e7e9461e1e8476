"""Start in any order: each service and the sandbox, as real processes, before NATS or PostgreSQL.

A service started before NATS serves /healthz at once, names NATS in /readyz (503), takes
writes into its outbox, stops on SIGTERM, and becomes ready when NATS arrives; started before
PostgreSQL, it answers 503 problem+json to requests that need the database and recovers when
the database arrives, without a restart. `bangfu migrate` waits for PostgreSQL the same way.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nats
import nats.js.errors
import pytest
import structlog

from shared.auth import issue_token
from shared.db import is_sqlite
from shared.natsserver import NatsServer, free_port
from shared.settings import SuiteSettings
from tests.conftest import POSTGRES_URL, _drop_schema
from tests.deploy.private_postgres import private_postgres
from tests.helpers import bearer, household_body, identity_number

log = structlog.get_logger(__name__)

SERVICES = ("registry", "verification", "benefits", "notifications")
STARTS_WITHIN = 90.0  # seconds from spawn to /healthz: imports on a busy 2-core machine
READY_WITHIN = 30.0  # seconds from NATS or PostgreSQL listening to /readyz 200
STOPS_WITHIN = 5.0  # seconds from SIGTERM to exit


def _env(home: Path, *, nats_port: int, database_url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BANGFU_")}
    env["BANGFU_HOME"] = str(home)
    env["BANGFU_NATS_URL"] = f"nats://127.0.0.1:{nats_port}"
    if database_url:
        env["BANGFU_DATABASE_URL"] = database_url
    return env


@pytest.fixture
def test_database() -> Iterator[Callable[[dict[str, str], str], None]]:
    """On the test PostgreSQL when there is one (CI): a schema of the test's own per service.

    Else the services keep their SQLite databases under the test's home.
    """
    schemas: list[str] = []

    def use(env: dict[str, str], service: str) -> None:
        if POSTGRES_URL and not is_sqlite(POSTGRES_URL):
            schema = f"test_order_{service}_{uuid.uuid4().hex[:10]}"
            env[f"BANGFU_{service.upper()}_DATABASE_URL"] = POSTGRES_URL
            env[f"BANGFU_{service.upper()}_DATABASE_SCHEMA"] = schema
            schemas.append(schema)

    yield use
    for schema in schemas:
        asyncio.run(_drop_schema(str(POSTGRES_URL), schema))


def _migrate(env: dict[str, str], *services: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bangfu", "migrate", *services],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    port: int
    log: Path

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=10, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(f"http://127.0.0.1:{self.port}{path}", timeout=10, **kwargs)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_until(self, path: str, status: int, *, within: float) -> float:
        """Seconds until `path` answers `status`; fails with the process's output after `within`."""
        started = time.monotonic()
        last = "no answer"
        while time.monotonic() - started < within:
            assert self.popen.poll() is None, f"{self.name} exited:\n{self.output()[-3000:]}"
            try:
                response = self.get(path)
                if response.status_code == status:
                    return time.monotonic() - started
                last = f"{response.status_code} {response.text}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.1)
        pytest.fail(f"{self.name} {path}: not {status} after {within:.0f}s ({last})")

    def terminate(self) -> float:
        """SIGTERM; the seconds it took to exit."""
        started = time.monotonic()
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(STOPS_WITHIN)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            pytest.fail(
                f"{self.name} ignored SIGTERM for {STOPS_WITHIN}s:\n{self.output()[-3000:]}"
            )
        return time.monotonic() - started


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[[str, dict[str, str]], Process]]:
    """Start `python -m services.<name>` (or `sandbox`) on a free port; killed at the end."""
    started: list[Process] = []

    def start(name: str, env: dict[str, str]) -> Process:
        port = free_port()
        module = "sandbox" if name == "sandbox" else f"services.{name}"
        log = tmp_path / f"{name}-{port}.log"
        with open(log, "wb") as output:
            popen = subprocess.Popen(
                [sys.executable, "-m", module],
                env={**env, f"BANGFU_{name.upper()}_PORT": str(port)},
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        process = Process(name, popen, port, log)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.popen.poll() is None:
            process.popen.kill()
            process.popen.wait()


@pytest.fixture
def later_nats(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server on a free port, not started: the test starts it when it wants NATS."""
    server = NatsServer(port=free_port(), store_dir=tmp_path / "nats", log_file=tmp_path / "n.log")
    yield server
    server.stop()


def _token(home: Path, *scopes: str) -> str:
    suite = SuiteSettings(home=home)
    return issue_token(
        suite.signing_key_file.read_bytes(),
        client_id="start-order-test",
        scopes=scopes,
        regions=["4113"],
        issuer=suite.auth_issuer,
        audience=suite.auth_audience,
    )


def _stream_events(nats_url: str, stream: str) -> list[dict[str, object]]:
    """The stream's events (CloudEvents), oldest first; none while it does not exist."""

    async def read() -> list[dict[str, object]]:
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            try:
                last = (await js.stream_info(stream)).state.last_seq
            except nats.js.errors.NotFoundError:
                return []
            return [
                json.loads((await js.get_msg(stream, seq)).data or b"{}")
                for seq in range(1, last + 1)
            ]
        finally:
            await nc.close()

    return asyncio.run(read())


class TestWithoutNats:
    @pytest.mark.parametrize("name", [*SERVICES, "sandbox"])
    def test_it_serves_health_at_once_and_is_ready_when_nats_arrives(
        self,
        name: str,
        tmp_path: Path,
        spawn: Callable[[str, dict[str, str]], Process],
        later_nats: NatsServer,
        test_database: Callable[[dict[str, str], str], None],
    ) -> None:
        env = _env(tmp_path / "home", nats_port=later_nats.port)
        if name in SERVICES:
            test_database(env, name)
            _migrate(env, name)
        process = spawn(name, env)

        process.wait_until("/healthz", 200, within=STARTS_WITHIN)
        waiting = process.get("/readyz")
        assert waiting.status_code == 503
        assert waiting.headers["content-type"] == "application/problem+json"
        assert waiting.json()["checks"]["nats"].startswith(
            f"unreachable at nats://127.0.0.1:{later_nats.port}"
        )
        if name in SERVICES:
            assert waiting.json()["checks"]["database"] == "ok"

        later_nats.start()
        seconds = process.wait_until("/readyz", 200, within=READY_WITHIN)
        log.info("ready after nats-server listened", service=name, seconds=round(seconds, 2))
        checks = process.get("/readyz").json()["checks"]
        assert set(checks.values()) == {"ok"}, checks
        assert process.terminate() < STOPS_WITHIN

    @pytest.mark.parametrize("name", [*SERVICES, "sandbox"])
    def test_sigterm_while_nats_is_away_stops_it_within_seconds(
        self,
        name: str,
        tmp_path: Path,
        spawn: Callable[[str, dict[str, str]], Process],
        later_nats: NatsServer,
        test_database: Callable[[dict[str, str], str], None],
    ) -> None:
        env = _env(tmp_path / "home", nats_port=later_nats.port)
        if name in SERVICES:
            test_database(env, name)
            _migrate(env, name)
        process = spawn(name, env)
        process.wait_until("/healthz", 200, within=STARTS_WITHIN)
        assert process.get("/readyz").status_code == 503

        seconds = process.terminate()

        log.info("stopped after SIGTERM without NATS", service=name, seconds=round(seconds, 2))
        # uvicorn re-raises SIGTERM once it has shut down, so the code is -15 (or 0).
        assert process.popen.returncode in (0, -signal.SIGTERM)
        if name in SERVICES:
            assert '"event": "service.stopped"' in process.output()

    def test_the_registry_takes_a_filing_into_its_outbox_and_publishes_it_when_nats_arrives(
        self,
        tmp_path: Path,
        spawn: Callable[[str, dict[str, str]], Process],
        later_nats: NatsServer,
        test_database: Callable[[dict[str, str], str], None],
    ) -> None:
        home = tmp_path / "home"
        env = _env(home, nats_port=later_nats.port)
        test_database(env, "registry")
        _migrate(env, "registry")
        registry = spawn("registry", env)
        registry.wait_until("/healthz", 200, within=STARTS_WITHIN)

        filed = registry.post(
            "/v1/households",
            headers=bearer(_token(home, "registry:write")),
            json=household_body(region="411302"),
        )

        assert filed.status_code == 201, filed.text
        assert registry.get("/readyz").json()["checks"]["nats"].startswith("unreachable")
        later_nats.start()
        registry.wait_until("/readyz", 200, within=READY_WITHIN)
        deadline = time.monotonic() + READY_WITHIN
        published: list[dict[str, object]] = []
        while time.monotonic() < deadline and not published:
            published = _stream_events(later_nats.url, "REGISTRY")
            time.sleep(0.2)
        # The applied event, held in the outbox until NATS was there, and only it.
        assert [(e["type"], e["subject"]) for e in published] == [
            ("cn.bangfu.registry.household.applied.v1", filed.json()["id"])
        ]
        registry.terminate()


class TestWithoutPostgres:
    @pytest.mark.parametrize("name", SERVICES)
    def test_it_answers_503_until_postgresql_arrives_then_recovers_without_a_restart(
        self,
        name: str,
        tmp_path: Path,
        spawn: Callable[[str, dict[str, str]], Process],
        nats_server: NatsServer,
    ) -> None:
        home = tmp_path / "home"
        with private_postgres() as postgres:
            env = _env(home, nats_port=nats_server.port, database_url=postgres.url)
            _migrate(env, name)
            postgres.stop()
            process = spawn(name, env)

            process.wait_until("/healthz", 200, within=STARTS_WITHIN)
            waiting = process.get("/readyz")
            assert waiting.status_code == 503
            assert waiting.json()["checks"]["database"].startswith("unreachable")
            assert waiting.json()["checks"]["nats"] == "ok"
            if name == "registry":
                started = time.monotonic()
                refused = process.post(
                    "/v1/households",
                    headers=bearer(_token(home, "registry:write")),
                    json=household_body(region="411302"),
                )
                assert time.monotonic() - started < 5  # an answer, not a hang
                assert refused.status_code == 503, refused.text
                assert refused.headers["content-type"] == "application/problem+json"
                assert refused.json()["type"].endswith("/database-unavailable")

            postgres.start()
            seconds = process.wait_until("/readyz", 200, within=READY_WITHIN)
            log.info("ready after PostgreSQL started", service=name, seconds=round(seconds, 2))
            logged = process.output()
            # The relay says the outage once, not a traceback at every poll.
            assert logged.count('"event": "outbox.database_away"') == 1, logged[-3000:]
            assert '"event": "outbox.relay_failed"' not in logged
            if name == "registry":
                write = bearer(_token(home, "registry:write"))
                filed = process.post("/v1/households", headers=write, json=household_body())
                assert filed.status_code == 201, filed.text

                # Lost under a running service: its pooled connections are dead, not a 500.
                postgres.stop("immediate")
                refused = process.post("/v1/households", headers=write, json=household_body())
                assert refused.status_code == 503, refused.text
                assert refused.json()["type"].endswith("/database-unavailable")
                assert process.get("/readyz").json()["checks"]["database"].startswith("unreachable")
                postgres.start()
                process.wait_until("/readyz", 200, within=READY_WITHIN)
                again = process.post(
                    "/v1/households",
                    headers=write,
                    json=household_body(head_number=identity_number(serial=456)),
                )
                assert again.status_code == 201, again.text
            assert process.terminate() < STOPS_WITHIN


class TestMigrate:
    def test_bangfu_migrate_waits_for_a_postgresql_that_starts_after_it(
        self, tmp_path: Path
    ) -> None:
        with private_postgres(started=False) as postgres:
            env = _env(tmp_path / "home", nats_port=free_port(), database_url=postgres.url)
            migrate = subprocess.Popen(
                [sys.executable, "-m", "bangfu", "migrate", "registry"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            lines: list[str] = []
            reader = threading.Thread(target=lambda: lines.extend(migrate.stdout or ()))
            reader.start()
            deadline = time.monotonic() + STARTS_WITHIN
            while not any("waiting for the database" in line for line in lines):
                assert migrate.poll() is None, "".join(lines)  # waiting, not gone
                assert time.monotonic() < deadline, "".join(lines)
                time.sleep(0.1)
            postgres.start()
            migrate.wait(120)
            reader.join()
            output = "".join(lines)

        assert migrate.returncode == 0, output
        assert "waiting for the database" in output
        assert "migrated registry (postgresql+asyncpg, schema registry)" in output

    def test_bangfu_migrate_gives_up_after_its_bound_and_says_why(self, tmp_path: Path) -> None:
        env = _env(
            tmp_path / "home",
            nats_port=free_port(),
            database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/postgres",
        )
        done = subprocess.run(
            [sys.executable, "-m", "bangfu", "migrate", "registry", "--wait", "3"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 1
        assert "the database did not answer within 3s" in done.stderr
