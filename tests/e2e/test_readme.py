"""The README's "Try it" block, run as written against `bangfu up --demo`, so that the README
cannot drift from the API: its body must be the registry's shape, its number valid, its tail real.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from shared.identity import is_valid_identity_number, mask_identity_number
from shared.natsserver import free_port

# The fixtures of `bangfu up` on free ports with a home of its own.
from tests.e2e.test_embedded import env, running_up, suite_up  # noqa: F401
from tests.helpers import code_block
from tests.identity.conftest import require_node

ROOT = Path(__file__).resolve().parents[2]
APPLIED = "cn.bangfu.registry.household.applied.v1"


def try_it_block() -> str:
    """The shell block between the "## Try it" heading and the next heading."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Try it\n", 1)[1].split("\n## ", 1)[0]
    return code_block(section, "sh")


def read_lines(shell: subprocess.Popen[str], lines: list[str]) -> None:
    assert shell.stdout is not None
    for line in shell.stdout:
        lines.append(line.rstrip("\n"))


def objects(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in list(lines) if line.startswith("{")]


def answer(lines: list[str]) -> dict[str, Any] | None:
    """curl's answer: the one line that is not a CloudEvent from the tail."""
    return next((o for o in objects(lines) if "specversion" not in o), None)


def applied(lines: list[str]) -> dict[str, Any] | None:
    """The tail's event of the household the block filed."""
    household = answer(lines)
    if household is None or "id" not in household:
        return None
    wanted = (APPLIED, household["id"])
    return next((o for o in objects(lines) if (o.get("type"), o.get("subject")) == wanted), None)


class TestTryIt:
    def test_the_identity_number_in_the_block_is_valid(self) -> None:
        numbers = re.findall(r'"identity_number": "([^"]*)"', try_it_block())
        assert numbers, "the block files a person"
        for number in numbers:
            assert is_valid_identity_number(number, today=date.today()), number

    def test_the_block_files_a_household_and_the_tail_shows_it_masked(
        self,
        suite_up: tuple[subprocess.Popen[str], list[str]],  # noqa: F811
        env: dict[str, str],  # noqa: F811
    ) -> None:
        _the_block_files_a_household_and_the_tail_shows_it_masked(env)

    def test_the_block_works_the_same_with_the_provider_and_the_console_as_make_up_runs_them(
        self,
        env: dict[str, str],  # noqa: F811
    ) -> None:
        require_node()
        env = {**env, "BANGFU_IDP_PORT": str(free_port()), "BANGFU_CONSOLE_PORT": str(free_port())}
        with running_up(env, "--idp") as (_, banner):
            console = f"http://127.0.0.1:{env['BANGFU_CONSOLE_PORT']}"
            assert any(line.split()[:2] == ["console", console] for line in banner), banner
            _the_block_files_a_household_and_the_tail_shows_it_masked(env)


class TestMakeUp:
    @pytest.mark.parametrize("node", [True, False])
    def test_make_up_runs_the_provider_and_console_where_node_is_installed(
        self, node: bool, tmp_path: Path
    ) -> None:
        tools = tmp_path / "bin"
        tools.mkdir()
        if node:
            (tools / "node").symlink_to("/bin/true")
        (tools / "make").symlink_to(shutil.which("make") or "/usr/bin/make")
        planned = subprocess.run(
            ["make", "-n", "up"],
            cwd=ROOT,
            env={"PATH": f"{tools}:/bin:/usr/bin" if node else f"{tools}"},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()[-1]
        program, *arguments = planned.split()
        assert program.endswith("/bangfu")
        assert arguments == (["up", "--demo", "--idp"] if node else ["up", "--demo"])


def _the_block_files_a_household_and_the_tail_shows_it_masked(environment: dict[str, str]) -> None:
    block = try_it_block()
    assert (ROOT / ".venv/bin/bangfu").exists(), "the block runs .venv/bin/bangfu: make install"
    shell = subprocess.Popen(
        ["bash", "-c", block],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own group: the tail it leaves running is stopped below
    )
    lines: list[str] = []
    reader = threading.Thread(target=read_lines, args=(shell, lines), daemon=True)
    reader.start()
    try:
        code = shell.wait(60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not applied(lines):
            time.sleep(0.2)
    finally:
        with contextlib.suppress(ProcessLookupError):  # the group may have ended already
            os.killpg(shell.pid, signal.SIGTERM)
    assert shell.stderr is not None
    household = answer(lines)
    assert code == 0, f"{household}\n{shell.stderr.read()}"  # curl --fail-with-body: a 2xx
    assert household is not None
    assert household["status"] == "applied"
    assert household["location"]["region"] == "411302"
    assert [m["name"] for m in household["members"]] == ["张三明"]
    event = applied(lines)
    assert event is not None, (
        [(o.get("type"), o.get("subject")) for o in objects(lines)],
        lines[-5:],
        shell.stderr.read()[-2000:],
    )
    [number] = re.findall(r'"identity_number": "([^"]*)"', block)
    assert event["data"]["head_identity_masked"] == mask_identity_number(number)
    tail = [json.dumps(o, ensure_ascii=False) for o in objects(lines) if "specversion" in o]
    assert number not in "\n".join(tail)
