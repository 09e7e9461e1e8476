"""`bangfu up` heals: a dead child is started again, and said so; one that keeps dying stops it."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bangfu.embedded import RESTART_LIMIT, RESTART_WINDOW_SECONDS
from tests.e2e.test_embedded import BANGFU, _children, _wait_gone, env  # noqa: F401 - fixture

UP_WITHIN = 180.0  # seconds from `bangfu up` to its banner on a busy 2-core machine


class Up:
    """A running `bangfu up` and every line it printed so far."""

    def __init__(self, process: subprocess.Popen[str]):
        self.process = process
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip())

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, text: str, *, within: float) -> str:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            assert self.process.poll() is None, f"bangfu up exited:\n{self.output()}"
            time.sleep(0.1)
        pytest.fail(f"no line with {text!r} after {within:.0f}s:\n{self.output()}")

    def child(self, module: str) -> int | None:
        """The pid of the child running `python -m <module>`, if one is running."""
        for pid in _children(self.process.pid):
            try:
                arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except FileNotFoundError:
                continue
            if module.encode() in arguments and "zombie" not in _status(pid):
                return pid
        return None


def _status(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return "zombie"  # gone is as good as dead here


@pytest.fixture
def up(env: dict[str, str]) -> Iterator[Up]:  # noqa: F811 - the fixture imported above
    process = subprocess.Popen(
        [*BANGFU, "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    suite = Up(process)
    suite.wait_for_line("Bangfu is running", within=UP_WITHIN)
    yield suite
    if process.poll() is None:
        process.kill()
        process.wait()


class TestBangfuUpHeals:
    def test_a_killed_registry_is_started_again_said_so_and_serves_readyz(
        self,
        up: Up,
        env: dict[str, str],  # noqa: F811
    ) -> None:
        first = up.child("services.registry")
        assert first is not None
        os.kill(first, signal.SIGKILL)

        said = up.wait_for_line("registry exited with code -9; restarting it in", within=10)
        restarted = up.wait_for_line("registry restarted (pid", within=30)
        second = up.child("services.registry")
        assert second is not None and second != first
        assert f"(pid {second})" in restarted
        assert "1 of 5 deaths allowed in 60s" in said
        registry = f"http://127.0.0.1:{env['BANGFU_REGISTRY_PORT']}"
        deadline = time.monotonic() + 90
        status = 0
        while time.monotonic() < deadline and status != 200:
            try:
                status = httpx.get(f"{registry}/readyz", timeout=2).status_code
            except httpx.HTTPError:
                status = 0
            time.sleep(0.2)
        assert status == 200
        assert up.process.poll() is None  # the rest of the suite never stopped

        up.process.send_signal(signal.SIGTERM)
        assert up.process.wait(30) == 0

    def test_a_child_that_keeps_dying_makes_up_give_up_and_exit_non_zero(self, up: Up) -> None:
        children = _children(up.process.pid)
        killed: set[int] = set()
        deadline = time.monotonic() + RESTART_WINDOW_SECONDS + 60
        while up.process.poll() is None and time.monotonic() < deadline:
            pid = up.child("services.registry")
            if pid is not None and pid not in killed:
                os.kill(pid, signal.SIGKILL)  # dies at once, every time it is started
                killed.add(pid)
            time.sleep(0.05)

        assert up.process.wait(30) == 1
        assert len(killed) == RESTART_LIMIT
        output = up.output()
        assert f"registry died {RESTART_LIMIT} times in 60s (last exit code -9); giving up" in (
            output
        )
        assert output.count("registry restarted (pid") == RESTART_LIMIT - 1
        assert _wait_gone(children) == []  # everything stopped, nothing orphaned
