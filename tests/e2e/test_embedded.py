"""`bangfu up` as a user runs it: a household posted with a `bangfu token` shows in the tail."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared.natsserver import free_port
from tests.helpers import bearer, household_body, identity_number

BANGFU = [sys.executable, "-m", "bangfu"]
SERVICES = ("registry", "verification", "benefits", "notifications", "sandbox")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """Free ports for everything and a home of its own, so a developer's `make up` is untouched."""
    values = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("BANGFU_") or k == "BANGFU_TEST_DATABASE_URL"
    }
    values["BANGFU_HOME"] = str(tmp_path / "home")
    values["BANGFU_EMBEDDED_NATS_PORT"] = str(free_port())
    for name in (*SERVICES, "sandbox", "sms_sandbox"):
        values[f"BANGFU_{name.upper()}_PORT"] = str(free_port())
    values["BANGFU_SMS_SANDBOX_SMTP_PORT"] = str(free_port())
    return values


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _gone(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    return not status.exists() or "zombie" in status.read_text()


def _wait_gone(pids: list[int], timeout: float = 15) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(_gone(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if not _gone(p)]


@contextlib.contextmanager
def running_up(
    env: dict[str, str], *flags: str
) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """`bangfu up --demo *flags`, once it has filed the demo, and the lines it printed."""
    process = subprocess.Popen(
        [*BANGFU, "up", "--demo", *flags],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    assert process.stdout is not None
    try:
        # 180 s: the demo files, reviews and checks 40 households on two busy cores.
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
            if line.startswith("Demo: filed"):
                break
        assert lines and lines[-1].startswith("Demo: filed"), "\n".join(lines)
        yield process, lines
    finally:  # a suite that did not come up in time is not left running either
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture
def suite_up(env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    with running_up(env) as running:
        yield running


class TestBangfuUp:
    def test_a_household_posted_with_a_bangfu_token_appears_in_bangfu_events_tail(
        self, suite_up: tuple[subprocess.Popen[str], list[str]], env: dict[str, str]
    ) -> None:
        process, banner = suite_up
        assert "Demo: filed 40 households in 南阳市 (region 4113)." in banner
        [console] = [line for line in banner if line.split()[:1] == ["console"]]
        assert "not started" in console and "Node.js" in console  # and why: no provider
        registry = f"http://127.0.0.1:{env['BANGFU_REGISTRY_PORT']}"
        for name in SERVICES:
            port = env[f"BANGFU_{name.upper()}_PORT"]
            assert f"http://127.0.0.1:{port}" in "\n".join(banner)
        token = subprocess.run(
            [*BANGFU, "token", "--regions", "4101", "--scope", "registry:write"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        number = identity_number(region="410105")
        created = httpx.post(
            f"{registry}/v1/households",
            headers=bearer(token),
            json=household_body(region="410105", head_number=number),
        )
        assert created.status_code == 201, created.text

        tail = subprocess.run(
            [*BANGFU, "events", "tail", "--region", "4101", "--since", "10m", "--count", "1"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        event = json.loads(tail.stdout.splitlines()[0])
        assert event["type"] == "cn.bangfu.registry.household.applied.v1"
        assert event["subject"] == created.json()["id"]
        assert event["region"] == "410105"
        assert number not in tail.stdout

    def test_a_second_up_says_so_and_sigterm_stops_every_child(
        self, suite_up: tuple[subprocess.Popen[str], list[str]], env: dict[str, str]
    ) -> None:
        process, _ = suite_up
        second = subprocess.run(
            [*BANGFU, "up"], env=env, capture_output=True, text=True, timeout=30
        )
        assert second.returncode == 1
        assert f"already running (pid {process.pid})" in second.stderr

        children = _children(process.pid)
        assert len(children) == 7  # nats-server, four services, the two sandboxes
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        assert _wait_gone(children) == []
        assert not (Path(env["BANGFU_HOME"]) / "up.pid").exists()

    def test_no_child_outlives_an_up_that_is_killed_outright(
        self, suite_up: tuple[subprocess.Popen[str], list[str]]
    ) -> None:
        process, _ = suite_up
        children = _children(process.pid)
        assert len(children) == 7
        process.kill()
        process.wait()
        assert _wait_gone(children) == []
