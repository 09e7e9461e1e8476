"""`bangfu up --idp --demo`: the provider runs as one more child and the services take its tokens.

The demo filing (registry, review steps, verification's consents and checks) goes through the
provider's tokens end to end, service-to-service calls included.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import httpx
import pytest

from bangfu.idp import read_registrations
from shared.natsserver import free_port, port_open
from tests.helpers import bearer, household_body, identity_number
from tests.identity.conftest import require_node

BANGFU = [sys.executable, "-m", "bangfu"]
CHILDREN = ("registry", "verification", "benefits", "notifications", "sandbox", "sms_sandbox")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """Free ports for everything and a home of its own, so a developer's `make up` is untouched."""
    require_node()
    values = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("BANGFU_") or k == "BANGFU_TEST_DATABASE_URL"
    }
    values["BANGFU_HOME"] = str(tmp_path / "home")
    values["BANGFU_EMBEDDED_NATS_PORT"] = str(free_port())
    for name in CHILDREN:
        values[f"BANGFU_{name.upper()}_PORT"] = str(free_port())
    values["BANGFU_SMS_SANDBOX_SMTP_PORT"] = str(free_port())
    values["BANGFU_IDP_PORT"] = str(free_port())
    values["BANGFU_CONSOLE_PORT"] = str(free_port())
    return values


@pytest.fixture
def suite_up(env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    process = subprocess.Popen(
        [*BANGFU, "up", "--idp", "--demo"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    assert process.stdout is not None
    deadline = time.monotonic() + 180  # the whole suite and 40 demo households, on a busy CI
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip())
        if line.startswith("Demo: filed"):
            break
    assert lines and lines[-1].startswith("Demo: filed"), "\n".join(lines)
    yield process, lines
    if process.poll() is None:
        process.kill()
        process.wait()


def _bangfu_token(env: dict[str, str], *args: str) -> str:
    return subprocess.run(
        [*BANGFU, "token", *args], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


def _environment(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    pairs = (item.decode(errors="replace").partition("=") for item in raw if item)
    return {name: value for name, _, value in pairs}


def _child_running(parent: int, module: bytes) -> int:
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    for pid in map(int, children):
        if module in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
            return pid
    raise AssertionError(f"no child runs {module!r}")


def test_bangfu_up_idp_serves_discovery_and_the_services_take_only_its_tokens(
    suite_up: tuple[subprocess.Popen[str], list[str]], env: dict[str, str]
) -> None:
    process, banner = suite_up
    issuer = f"http://127.0.0.1:{env['BANGFU_IDP_PORT']}"
    text = "\n".join(banner)
    assert f"idp            {issuer}" in text
    for username in read_registrations().people:
        assert username in text
    # A development token, signed with the running provider's own key: `bangfu token` makes
    # the same, so the README's commands work with and without the provider.
    [banner_token] = [line.split("=", 1)[1] for line in banner if "export BANGFU_TOKEN=" in line]

    discovery = httpx.get(f"{issuer}/.well-known/openid-configuration")
    assert discovery.status_code == 200
    assert discovery.json()["issuer"] == issuer
    token = httpx.post(
        f"{issuer}/token",
        data={"grant_type": "client_credentials"},
        auth=("dept-4113", "dev-only-dept-4113-secret"),
    )
    assert token.status_code == 200, token.text
    assert "Demo: filed 40 households in 南阳市 (region 4113)." in text

    registry_url = f"http://127.0.0.1:{env['BANGFU_REGISTRY_PORT']}"
    number = identity_number(region="411302", birth=date(1971, 2, 3), serial=457)
    body = household_body(region="411302", head_number=number)
    created = httpx.post(
        f"{registry_url}/v1/households", headers=bearer(token.json()["access_token"]), json=body
    )
    assert created.status_code == 201, created.text
    # Signed with a development key (another home's, where no provider runs): refused.
    elsewhere = {**env, "BANGFU_HOME": str(Path(env["BANGFU_HOME"]).parent / "elsewhere")}
    development = _bangfu_token(elsewhere, "--regions", "4113", "--scope", "registry:write")
    refused = httpx.post(f"{registry_url}/v1/households", headers=bearer(development), json=body)
    assert refused.status_code == 401
    # `bangfu token` of this home signs with the provider's key: accepted, for what it says.
    own = _bangfu_token(env, "--regions", "4113", "--scope", "registry:read")
    listed = httpx.get(f"{registry_url}/v1/households?region=4113", headers=bearer(own))
    assert listed.status_code == 200, listed.text
    assert listed.json()["items"]
    narrow = httpx.post(f"{registry_url}/v1/households", headers=bearer(own), json=body)
    assert narrow.status_code == 403  # registry:read only
    seen = httpx.get(f"{registry_url}/v1/households?region=4113", headers=bearer(banner_token))
    assert seen.status_code == 200, seen.text
    keys = Path(env["BANGFU_HOME"]) / "idp-keys.json"
    assert keys.exists() and keys.stat().st_mode & 0o077 == 0

    # The console is one more child: its URL in the banner, its sign-in sent to the provider.
    console_url = f"http://127.0.0.1:{env['BANGFU_CONSOLE_PORT']}"
    assert f"console        {console_url}" in text
    assert httpx.get(f"{console_url}/healthz").text == "ok"
    login = httpx.get(f"{console_url}/auth/login")
    assert login.status_code == 303
    assert login.headers["location"].startswith(f"{issuer}/auth?")

    registry = _environment(_child_running(process.pid, b"services.registry"))
    assert registry["BANGFU_AUTH_ISSUER"] == issuer
    notifications = _environment(_child_running(process.pid, b"services.notifications"))
    assert notifications["BANGFU_NOTIFICATIONS_CLIENT_ID"] == "svc-notifications"
    assert (
        notifications["BANGFU_NOTIFICATIONS_CLIENT_SECRET"] == "dev-only-svc-notifications-secret"
    )

    process.send_signal(signal.SIGINT)
    process.wait(30)
    assert not port_open(int(env["BANGFU_IDP_PORT"]))
    assert not port_open(int(env["BANGFU_CONSOLE_PORT"]))
