"""deploy/Dockerfile: hadolint clean, and the rules hadolint does not know about."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
IDP_DOCKERFILE = ROOT / "deploy" / "idp" / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"
BUILD_TOOLS = ("gcc", "build-essential", "make ", "g++", "cargo", "rustc", "pip install")


def final_stage(text: str) -> list[tuple[str, str]]:
    """(instruction, arguments) of the last stage, continuation lines joined, comments dropped."""
    joined = text.replace("\\\n", " ")
    instructions = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def lint(path: Path) -> list[str]:
    """hadolint's findings, plus: the final stage must run as a named non-root USER.

    hadolint only flags a last `USER root`; a Dockerfile with no USER at all runs as root
    too and passes it, so that is checked here.
    """
    result = subprocess.run(
        [str(HADOLINT), "--no-color", str(path)], capture_output=True, text=True, check=False
    )
    findings = result.stdout.splitlines()
    users = [args for keyword, args in final_stage(path.read_text()) if keyword == "USER"]
    if not users:
        findings.append("no USER in the final stage: the container would run as root")
    elif users[-1].split(":")[0] in ("root", "0"):
        findings.append(f"the final stage runs as {users[-1]}")
    return findings


@pytest.mark.parametrize("dockerfile", [DOCKERFILE, IDP_DOCKERFILE], ids=["suite", "idp"])
def test_the_dockerfile_is_lint_clean(dockerfile: Path) -> None:
    assert lint(dockerfile) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda text: text.replace("\nUSER 10001:10001\n", "\n"), "no USER in the final stage"),
        (lambda text: text.replace("\nUSER 10001:10001\n", "\nUSER root\n"), "DL3002"),
        (lambda text: text.replace("python:3.11-slim AS build", "python AS build"), "DL3006"),
    ],
    ids=["missing-user", "root-user", "untagged-base"],
)
def test_lint_catches_a_broken_dockerfile(tmp_path: Path, change: object, expected: str) -> None:
    broken = tmp_path / "Dockerfile"
    broken.write_text(change(DOCKERFILE.read_text()))  # type: ignore[operator]
    assert broken.read_text() != DOCKERFILE.read_text()
    assert any(expected in finding for finding in lint(broken))


def test_the_final_stage_is_slim_non_root_and_checked() -> None:
    text = DOCKERFILE.read_text()
    stage = final_stage(text)
    keywords = [keyword for keyword, _ in stage]
    assert text.count("\nFROM ") + text.startswith("FROM ") >= 2, "multi-stage"
    assert stage[0][1].endswith("-slim"), "slim base"
    assert "HEALTHCHECK" in keywords
    assert ("USER", "10001:10001") in stage
    run_lines = " ".join(args for keyword, args in stage if keyword == "RUN")
    assert not [tool for tool in BUILD_TOOLS if tool in run_lines], "no build tools at run time"
    # The image copies only the built virtualenv from the build stage, never the sources.
    copies = [args for keyword, args in stage if keyword == "COPY"]
    assert copies == ["--from=build /opt/bangfu /opt/bangfu"]


HEALTHCHECKS = {
    # script, the variable naming its port, the path it must find answering 200
    "service": (
        [sys.executable, str(ROOT / "deploy" / "healthcheck.py")],
        "BANGFU_BENEFITS_PORT",
        "/healthz",
    ),
    "provider": (
        ["node", str(ROOT / "deploy" / "idp" / "healthcheck.mjs")],
        "BANGFU_IDP_PORT",
        "/.well-known/openid-configuration",
    ),
}


@pytest.mark.parametrize("which", sorted(HEALTHCHECKS))
def test_the_healthcheck_probes_the_configured_port(which: str) -> None:
    """deploy/healthcheck.py and deploy/idp/healthcheck.mjs: the port comes from the process's
    own setting; exit 0 iff its liveness path answers, 1 once the server is gone."""
    import os
    import shutil
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    command, variable, path = HEALTHCHECKS[which]
    if shutil.which(command[0]) is None:
        pytest.skip(f"{command[0]} is not installed")

    class Liveness(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            self.send_response(200 if self.path == path else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Liveness)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BANGFU_")}
    env[variable] = str(server.server_port)
    try:
        up = subprocess.run(command, env=env, check=False, timeout=30)
        server.shutdown()
        # Stopped serving but still listening: the check must give up on its own.
        down = subprocess.run(command, env=env, check=False, timeout=30)
    finally:
        server.server_close()
    assert (up.returncode, down.returncode) == (0, 1)


def test_the_build_context_holds_exactly_what_the_image_copies() -> None:
    """deploy/Dockerfile.dockerignore: everything out except the sources the COPYs name."""
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
    rules = [line for line in ignore if line and not line.startswith("#")]
    assert rules[0] == "*"
    included = {rule.removeprefix("!").rstrip("/") for rule in rules if rule.startswith("!")}
    copied = set()
    for line in DOCKERFILE.read_text().replace("\\\n", " ").splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            *sources, _ = line.split()[1:]
            copied |= {source.rstrip("/") for source in sources}
    assert copied == included


def test_the_provider_image_installs_only_its_locked_runtime_packages() -> None:
    """deploy/idp/Dockerfile: `npm ci --omit=dev` from the lockfile, the program copied, and a
    build context (deploy/idp/.dockerignore) without node_modules, the demo clients or keys."""
    stage = final_stage(IDP_DOCKERFILE.read_text())
    assert stage[0][1].endswith("-slim")
    runs = " ".join(args for keyword, args in stage if keyword == "RUN")
    assert "npm ci --omit=dev" in runs and "npm install" not in runs
    assert ("USER", "1000:1000") in stage
    assert "HEALTHCHECK" in [keyword for keyword, _ in stage]
    rules = [
        line
        for line in (IDP_DOCKERFILE.parent / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert rules[0] == "*"
    included = {rule.removeprefix("!") for rule in rules if rule.startswith("!")}
    copied = {
        source for keyword, args in stage if keyword == "COPY" for source in args.split()[:-1]
    }
    assert copied == included
    assert {"package-lock.json", ".npmrc", "*.mjs"} <= included
    assert not {"node_modules", "clients.json"} & included
