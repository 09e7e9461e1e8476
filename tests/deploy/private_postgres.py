"""A PostgreSQL of the test's own, from this machine's PostgreSQL 15, that it may stop and start.

The shared test database must never go away under other tests: a start-up order or an outage
is tried on a private cluster (`initdb` in a temporary folder, a free port, trust on loopback).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from shared.natsserver import free_port

BIN = Path("/usr/lib/postgresql/15/bin")


def _binary(name: str) -> str | None:
    beside = BIN / name
    return str(beside) if beside.exists() else shutil.which(name)


def available() -> bool:
    return _binary("initdb") is not None and _binary("pg_ctl") is not None


class PrivatePostgres:
    """One cluster in a temporary folder; `start` and `stop` as often as a test likes."""

    def __init__(self, directory: Path, port: int):
        self.directory = directory
        self.port = port
        self.data = directory / "data"
        self.log = directory / "postgres.log"
        # initdb and postgres refuse to run as root: run them as the `postgres` user then.
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        if self._as:
            user = pwd.getpwnam("postgres")
            os.chown(self.directory, user.pw_uid, user.pw_gid)
        self._run(_binary("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-N")

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory} -c fsync=off"
        pg_ctl = _binary("pg_ctl")
        self._run(pg_ctl, "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(_binary("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def _run(self, *args: str | None, check: bool = True) -> None:
        command = [*self._as, *(str(a) for a in args)]
        subprocess.run(command, check=check, capture_output=True, timeout=120)


@contextmanager
def private_postgres(*, started: bool = True) -> Iterator[PrivatePostgres]:
    """A fresh cluster (started, unless the test starts it itself); removed afterwards.

    Skipped where PostgreSQL 15 is not installed, except in CI (BANGFU_TEST_DATABASE_URL set),
    where a missing `initdb` is a failure rather than a silent gap.
    """
    if not available():
        if os.environ.get("BANGFU_TEST_DATABASE_URL"):
            pytest.fail("initdb and pg_ctl (PostgreSQL 15) are needed for this test in CI")
        pytest.skip("initdb and pg_ctl (PostgreSQL 15) are not installed")
    directory = Path(tempfile.mkdtemp(prefix="bangfu-pg-"))
    server = PrivatePostgres(directory, free_port())
    try:
        server.init()
        if started:
            server.start()
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(directory, ignore_errors=True)
