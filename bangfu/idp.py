"""The suite's OpenID provider (`deploy/idp`, oidc-provider on Node): install it and start it.

Used by `bangfu up --idp` and by the identity tests. The provider is a Node program; this module
only installs its locked packages, starts it as a child process and reads its clients file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.natsserver import die_with_parent

IDP_DIR = Path(__file__).resolve().parent.parent / "deploy" / "idp"
DEMO_CLIENTS = IDP_DIR / "clients.json"


class IdpUnavailable(RuntimeError):
    """Node or npm is missing, or the provider's packages cannot be installed."""


class IdpSettings(BaseSettings):
    """Where `bangfu up --idp` runs the provider (BANGFU_IDP_*, as the provider reads them)."""

    model_config = SettingsConfigDict(env_prefix="BANGFU_IDP_")

    port: int = 8180
    clients: Path = DEMO_CLIENTS
    access_token_ttl: int = 600

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def ensure_installed() -> None:
    """`npm ci --omit=dev` in deploy/idp when node_modules is missing or older than the lockfile."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise IdpUnavailable(
                f"`{tool}` is not on PATH: the identity provider needs Node.js 20 or later and npm"
            )
    lockfile = IDP_DIR / "package-lock.json"
    if not lockfile.exists():
        raise IdpUnavailable(f"{lockfile} is missing: is this a source checkout of Bangfu?")
    # npm writes this file last on every install: its age is the installation's.
    installed = IDP_DIR / "node_modules" / ".package-lock.json"
    if installed.exists() and installed.stat().st_mtime >= lockfile.stat().st_mtime:
        return
    result = subprocess.run(
        ["npm", "ci", "--omit=dev", "--no-audit", "--no-fund"],
        cwd=IDP_DIR,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise IdpUnavailable(f"npm ci in {IDP_DIR} failed:\n{result.stderr[-2000:]}")


def start(
    port: int,
    issuer: str,
    clients_file: Path,
    keys_file: Path,
    *,
    access_token_ttl: int = 600,
    log: Path | None = None,
    timeout: float = 30,
) -> subprocess.Popen[bytes]:
    """Start the provider on 127.0.0.1:`port`; return once its discovery document answers.

    The keys file is created with one ES256 key if missing. Output goes to `log` (default:
    idp.log beside the keys file). Raises RuntimeError with the log's last lines if the provider
    exits or does not answer within `timeout` seconds.
    """
    ensure_installed()
    log = log or keys_file.parent / "idp.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    keys_file.parent.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "BANGFU_IDP_HOST": "127.0.0.1",
        "BANGFU_IDP_PORT": str(port),
        "BANGFU_IDP_ISSUER": issuer,
        "BANGFU_IDP_CLIENTS": str(clients_file.resolve()),
        "BANGFU_IDP_KEYS": str(keys_file.resolve()),
        "BANGFU_IDP_ACCESS_TOKEN_TTL": str(access_token_ttl),
    }
    with open(log, "ab") as output:
        process = subprocess.Popen(
            ["node", str(IDP_DIR / "server.mjs")],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
    discovery = f"http://127.0.0.1:{port}/.well-known/openid-configuration"
    deadline = time.monotonic() + timeout
    while True:
        code = process.poll()
        if code is not None:
            raise RuntimeError(f"the identity provider exited with code {code}:\n{_tail(log)}")
        try:
            if httpx.get(discovery, timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise RuntimeError(
                f"the identity provider did not answer {discovery} in {timeout:.0f}s:\n{_tail(log)}"
            )
        time.sleep(0.05)


def signing_key(keys_file: Path) -> tuple[bytes, str]:
    """The key the provider signs with (the first of its keys file): PEM and kid."""
    first = json.loads(keys_file.read_text(encoding="utf-8"))["keys"][0]
    key = ECAlgorithm.from_jwk(json.dumps(first))
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{keys_file}: the first key is not a private P-256 key")
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem, str(first["kid"])


def _tail(log: Path, lines: int = 15) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@dataclass(frozen=True)
class Registration:
    """A client (system) or person of the clients file, as the provider will know it."""

    name: str
    secret: str | None
    scopes: tuple[str, ...]
    regions: tuple[str, ...]
    role: str = ""


@dataclass(frozen=True)
class Registrations:
    clients: dict[str, Registration]
    people: dict[str, Registration]

    def service_credentials(self, service: str) -> Registration | None:
        """The client a service calls others with (`svc-<service>`), if the file has one."""
        return self.clients.get(f"svc-{service}")


def read_registrations(clients_file: Path = DEMO_CLIENTS) -> Registrations:
    """The clients file's clients and people (the provider itself validates it fully)."""
    document = json.loads(clients_file.read_text(encoding="utf-8"))
    clients = {
        entry["client_id"]: Registration(
            name=entry["client_id"],
            secret=entry.get("client_secret"),
            scopes=tuple(entry.get("scopes", ())),
            regions=tuple(entry.get("regions", ())),
        )
        for entry in document.get("clients", ())
    }
    people = {
        entry["username"]: Registration(
            name=entry.get("name", entry["username"]),
            secret=entry["password"],
            scopes=tuple(entry.get("scopes", ())),
            regions=tuple(entry.get("regions", ())),
            role=entry.get("role", ""),
        )
        for entry in document.get("people", ())
    }
    return Registrations(clients, people)
