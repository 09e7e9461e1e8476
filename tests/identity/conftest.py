"""The real OpenID provider (deploy/idp, oidc-provider on Node) as a process for the tests.

`idp`: one provider for the session (start-up costs Node a moment), with a fresh copy of the demo
clients file and a keys file of its own. `idp_factory`: providers of a test's own (another token
lifetime, a rotation), stopped after the test. Without `node` these tests skip, unless
BANGFU_REQUIRE_IDP=1 (CI), where they fail.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from bangfu.idp import DEMO_CLIENTS, IDP_DIR, Registrations, read_registrations, start
from shared.natsserver import free_port


def require_node() -> None:
    if shutil.which("node") and shutil.which("npm"):
        return
    message = "node and npm are needed for the identity provider tests"
    if os.environ.get("BANGFU_REQUIRE_IDP") == "1":
        pytest.fail(f"{message} (BANGFU_REQUIRE_IDP=1)")
    pytest.skip(message)


class RunningIdp:
    """One provider process on a port of its own, with its own clients and keys files."""

    def __init__(self, directory: Path, *, access_token_ttl: int = 600):
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.clients_file = directory / "clients.json"
        self.keys_file = directory / "idp-keys.json"
        self.log = directory / "idp.log"
        self.access_token_ttl = access_token_ttl
        shutil.copyfile(DEMO_CLIENTS, self.clients_file)
        self.process = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        return start(
            self.port,
            self.issuer,
            self.clients_file,
            self.keys_file,
            access_token_ttl=self.access_token_ttl,
            log=self.log,
        )

    @property
    def registrations(self) -> Registrations:
        return read_registrations(self.clients_file)

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/token"

    def token(self, client_id: str, secret: str, scope: str | None = None) -> str:
        """A client-credentials access token (raises on a refusal)."""
        data = {"grant_type": "client_credentials"}
        if scope is not None:
            data["scope"] = scope
        response = httpx.post(self.token_endpoint, data=data, auth=(client_id, secret))
        response.raise_for_status()
        return str(response.json()["access_token"])

    def client_token(self, client_id: str, scope: str | None = None) -> str:
        """A token for a client of the clients file, with its registered secret."""
        secret = self.registrations.clients[client_id].secret
        assert secret is not None, f"{client_id} has no secret"
        return self.token(client_id, secret, scope)

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        response = httpx.get(f"{self.issuer}/jwks")
        response.raise_for_status()
        keys: dict[str, list[dict[str, str]]] = response.json()
        return keys

    def kids(self) -> list[str]:
        return [key["kid"] for key in self.jwks()["keys"]]

    def rotate(self) -> None:
        """Put a new signing key first in the keys file (the running provider sees it on reload)."""
        self._keys_command("rotate")

    def retire(self) -> None:
        """Keep only the first key in the keys file (the running provider sees it on reload)."""
        self._keys_command("retire")

    def _keys_command(self, command: str) -> None:
        subprocess.run(
            ["node", str(IDP_DIR / "server.mjs"), command],
            env={**os.environ, "BANGFU_IDP_KEYS": str(self.keys_file)},
            check=True,
            capture_output=True,
        )

    def reload(self, *, expect: str = "reloaded:") -> None:
        """SIGHUP: the provider reads its keys and clients files again, without a restart.

        Returns once the log says `expect` once more ("reload failed" for a broken file).
        """
        before = self.log.read_text(errors="replace").count(expect)
        self.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while self.log.read_text(errors="replace").count(expect) == before:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {expect!r} in {self.log} after SIGHUP")
            time.sleep(0.05)

    def restart(self) -> None:
        self.stop()
        self.process = self._start()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="session")
def _session_idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningIdp]:
    require_node()
    idp = RunningIdp(tmp_path_factory.mktemp("idp"))
    yield idp
    idp.stop()


@pytest.fixture
def idp(_session_idp: RunningIdp) -> RunningIdp:
    """The session's provider, demo clients, 600-second tokens. Restarted if a test stopped it."""
    if _session_idp.process.poll() is not None:
        _session_idp.restart()
    return _session_idp


@pytest.fixture
def idp_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., RunningIdp]]:
    """Start providers of this test's own: `idp_factory(access_token_ttl=60)`."""
    require_node()
    started: list[RunningIdp] = []

    def factory(*, access_token_ttl: int = 600) -> RunningIdp:
        idp = RunningIdp(tmp_path_factory.mktemp("idp"), access_token_ttl=access_token_ttl)
        started.append(idp)
        return idp

    yield factory
    for idp in started:
        idp.stop()
