"""The embedded default: one machine, no servers to install.

Starts a real nats-server from the wheel, migrates a SQLite database per service, runs the four
services, the department sandbox and the SMS gateway sandbox (with a local SMTP server) as child
processes, and stops them all on Ctrl-C or SIGTERM. With `idp`, the suite's OpenID provider
(deploy/idp) runs as one more child and the services take their tokens from it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
)

from bangfu import idp as identity
from sandbox.app import SandboxSettings
from sandbox.sms.app import SmsSandboxSettings
from services.benefits.settings import BenefitsSettings
from services.console.settings import SessionStoreSettings
from services.console.settings import configured_port as console_port
from services.notifications.settings import NotificationsSettings
from services.registry.settings import RegistrySettings
from services.verification.settings import VerificationSettings
from shared.auth import ensure_signing_key
from shared.db import Database, unreachable
from shared.migrations import MIGRATED, SERVICES, upgrade
from shared.natsserver import NatsServer, die_with_parent, port_open
from shared.settings import ServiceSettings, SuiteSettings

Say = Callable[[str], None]


SETTINGS: dict[str, type[ServiceSettings]] = {
    "registry": RegistrySettings,
    "verification": VerificationSettings,
    "benefits": BenefitsSettings,
    "notifications": NotificationsSettings,
}


def service_settings(service: str) -> ServiceSettings:
    """The settings a service will read from the environment (to migrate before it starts)."""
    return SETTINGS[service]()


def service_ports() -> dict[str, int]:
    """Each child's port, as its settings read it from the environment."""
    ports = {service: service_settings(service).port for service in SERVICES}
    ports["sandbox"] = SandboxSettings().port
    ports["sms"] = SmsSandboxSettings().port  # with the local SMTP server beside it
    return ports


# The children that are not services: the department sandbox, the SMS gateway (and mail) one.
SANDBOX_MODULES = {"sandbox": "sandbox", "sms": "sandbox.sms"}


def migrate(
    services: tuple[str, ...] = MIGRATED, *, say: Say = print, wait_seconds: float = 0
) -> None:
    """Bring each service's database (and the console's) to head, waiting up to `wait_seconds`
    for it to answer."""
    for service in services:
        url, schema = (
            SessionStoreSettings().database
            if service == "console"
            else SETTINGS[service].for_migration().database
        )
        if wait_seconds:
            wait_for_database(url, wait_seconds=wait_seconds, say=say)
        upgrade(service, url=url, schema=schema)
        say(f"migrated {service} ({url.split('://')[0]}{', schema ' + schema if schema else ''})")


class DatabaseAway(Exception):
    """The database did not answer within the time `bangfu migrate --wait` gives it."""


def wait_for_database(url: str, *, wait_seconds: float, say: Say = print) -> None:
    """Retry connecting, with backoff, until the database answers or `wait_seconds` pass.

    A migration job started with the database (compose, a Kubernetes Job) would otherwise
    fail on the first refusal while PostgreSQL is still starting. Only an unreachable or
    starting database is retried: a wrong password or a missing database fails at once.
    """

    def said(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0
        say(
            f"waiting for the database ({type(error).__name__}: {error}); "
            f"attempt {state.attempt_number}, next in {delay:.1f}s"
        )

    async def ping() -> None:
        database = Database(url)
        try:
            await database.ping()
        finally:
            await database.dispose()

    try:
        for attempt in Retrying(
            stop=stop_after_delay(wait_seconds),
            wait=wait_exponential(multiplier=0.25, max=5),
            retry=retry_if_exception(unreachable),
            before_sleep=said,
            reraise=True,
        ):
            with attempt:
                asyncio.run(ping())
    except Exception as exc:
        if unreachable(exc):
            raise DatabaseAway(
                f"the database did not answer within {wait_seconds:g}s: {type(exc).__name__}: {exc}"
            ) from exc
        raise


# A child that dies is started again after a backoff (0.5 s, doubling, at most 10 s); one that
# dies RESTART_LIMIT times within RESTART_WINDOW_SECONDS stops the suite: it is not a blip.
RESTART_LIMIT = 5
RESTART_WINDOW_SECONDS = 60.0
RESTART_FIRST_DELAY_SECONDS = 0.5
RESTART_MAX_DELAY_SECONDS = 10.0


@dataclass
class Child:
    """A process of the suite, and how to start it again when it dies."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    ready_url: str
    spawn: Callable[[], subprocess.Popen[bytes]]
    deaths: deque[float] = field(default_factory=deque)
    restart_at: float | None = None  # when a dead child is due to start again

    def recent_deaths(self, now: float) -> int:
        while self.deaths and self.deaths[0] < now - RESTART_WINDOW_SECONDS:
            self.deaths.popleft()
        return len(self.deaths)


class KeepsDying(RuntimeError):
    """A child died RESTART_LIMIT times within RESTART_WINDOW_SECONDS."""


class AlreadyRunning(Exception):
    """Another `bangfu up` holds the ports or the lock."""


class Supervisor:
    """Owns every child process of `bangfu up` and stops them all, whatever happens."""

    def __init__(self, suite: SuiteSettings, *, say: Say = print, idp: bool = False):
        self.suite = suite
        self.home = suite.home.resolve()
        self.say = say
        self.idp = identity.IdpSettings() if idp else None
        self.children: list[Child] = []
        self.nats: NatsServer | None = None
        self.lock = self.home / "up.pid"

    def check_not_running(self) -> None:
        if self.lock.exists():
            pid = int(self.lock.read_text().strip() or 0)
            if pid and _alive(pid):
                raise AlreadyRunning(
                    f"Bangfu is already running (pid {pid}); "
                    f"stop it with Ctrl-C in its terminal or `kill {pid}`"
                )
        ports = service_ports()
        if "BANGFU_NATS_URL" not in os.environ:
            ports["nats"] = self.suite.embedded_nats_port
        if SmsSandboxSettings().smtp_port:
            ports["smtp"] = SmsSandboxSettings().smtp_port
        if self.idp:
            ports["idp"] = self.idp.port
            ports["console"] = console_port()
        taken = [f"{name} ({port})" for name, port in ports.items() if port_open(port)]
        if taken:
            raise AlreadyRunning(
                f"ports already in use: {', '.join(taken)}; is another "
                "Bangfu running? Set BANGFU_<SERVICE>_PORT to move one."
            )

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "logs").mkdir(exist_ok=True)
        self.lock.write_text(str(os.getpid()))
        (self.home / PROVIDER_MARK).unlink(missing_ok=True)  # left by one that was killed
        env = {**os.environ, "BANGFU_HOME": str(self.home)}
        if "BANGFU_NATS_URL" not in os.environ:
            nats_log = self.home / "logs" / "nats.log"
            self.nats = NatsServer(
                port=self.suite.embedded_nats_port, store_dir=self.home / "nats", log_file=nats_log
            )
            self.nats.start()
            nats = Child("nats", self._nats_process(), nats_log, "", self._restart_nats)
            self.children.append(nats)
            env["BANGFU_NATS_URL"] = self.nats.url
            self.say(f"nats-server with JetStream on {self.nats.url} (store {self.nats.store_dir})")
        if self.idp:
            self._start_idp(self.idp, env)
        sms = SmsSandboxSettings()
        # Notifications sends through the SMS sandbox and its mail server, wherever they listen.
        env.setdefault("BANGFU_NOTIFICATIONS_SMS_GATEWAY_URL", f"http://127.0.0.1:{sms.port}")
        env.setdefault("BANGFU_NOTIFICATIONS_SMTP_PORT", str(sms.smtp_port))
        # The services find the registry and the department sandbox wherever they were moved.
        ports = service_ports()
        for service in ("verification", "benefits", "notifications"):
            env.setdefault(
                f"BANGFU_{service.upper()}_REGISTRY_URL", f"http://127.0.0.1:{ports['registry']}"
            )
        env.setdefault(
            "BANGFU_VERIFICATION_DEPARTMENTS_URL", f"http://127.0.0.1:{ports['sandbox']}"
        )
        os.environ.update(env)
        migrate(say=self.say)
        if not self.suite.auth_jwks_url:  # before the services start, so none races for it
            ensure_signing_key(self.suite.signing_key_file, self.suite.public_key_file)
        for name, port in service_ports().items():
            module = SANDBOX_MODULES.get(name, f"services.{name}")
            ready = "/healthz" if name in SANDBOX_MODULES else "/readyz"
            self._spawn(
                name, [sys.executable, "-m", module], env, f"http://127.0.0.1:{port}{ready}"
            )
        if self.idp:  # the console signs people in through the provider: only with one
            self._start_console(env, registry_port=service_ports()["registry"])
        self._wait_ready()

    def _start_console(self, env: dict[str, str], *, registry_port: int) -> None:
        port = console_port()
        env.setdefault("BANGFU_CONSOLE_REGISTRY_URL", f"http://127.0.0.1:{registry_port}")
        verification = f"http://127.0.0.1:{service_ports()['verification']}"
        env.setdefault("BANGFU_CONSOLE_VERIFICATION_URL", verification)
        benefits = f"http://127.0.0.1:{service_ports()['benefits']}"
        env.setdefault("BANGFU_CONSOLE_BENEFITS_URL", benefits)
        env.setdefault("BANGFU_CONSOLE_PUBLIC_URL", f"http://127.0.0.1:{port}")
        self._spawn(
            "console",
            [sys.executable, "-m", "services.console"],
            env,
            f"http://127.0.0.1:{port}/healthz",
        )

    def _start_idp(self, settings: identity.IdpSettings, env: dict[str, str]) -> None:
        """The provider first, so that the services find its discovery document when they start.

        Every service validates its callers' tokens against it, and the ones that call others
        log in with their client of the clients file (`svc-<service>`).
        """
        log = self.home / "logs" / "idp.log"

        def spawn() -> subprocess.Popen[bytes]:
            return identity.start(
                settings.port,
                settings.issuer,
                settings.clients,
                self.home / "idp-keys.json",
                access_token_ttl=settings.access_token_ttl,
                log=log,
            )

        discovery = f"{settings.issuer}/.well-known/openid-configuration"
        self.children.append(Child("idp", spawn(), log, discovery, spawn))
        env["BANGFU_AUTH_ISSUER"] = settings.issuer
        registrations = identity.read_registrations(settings.clients)
        for service in SERVICES:
            client = registrations.service_credentials(service)
            if client and client.secret:
                env[f"BANGFU_{service.upper()}_CLIENT_ID"] = client.name
                env[f"BANGFU_{service.upper()}_CLIENT_SECRET"] = client.secret
        self.say(f"identity provider {settings.issuer} (clients {settings.clients})")
        # `bangfu token` signs with the provider's key while this runs (see running_provider).
        (self.home / PROVIDER_MARK).write_text(settings.issuer)

    def _spawn(self, name: str, args: list[str], env: dict[str, str], ready_url: str) -> None:
        log = self.home / "logs" / f"{name}.log"

        def spawn() -> subprocess.Popen[bytes]:
            with open(log, "ab") as output:
                return subprocess.Popen(
                    args,
                    env=env,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    preexec_fn=die_with_parent,
                )

        self.children.append(Child(name, spawn(), log, ready_url, spawn))

    def _nats_process(self) -> subprocess.Popen[bytes]:
        assert self.nats and self.nats.process
        return self.nats.process

    def _restart_nats(self) -> subprocess.Popen[bytes]:
        assert self.nats
        self.nats.start()  # the same port and store: the streams come back with it
        return self._nats_process()

    def _wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        pending = [child for child in self.children if child.ready_url]
        while pending:
            for child in list(pending):
                self.heal()
                try:
                    if httpx.get(child.ready_url, timeout=1).status_code == 200:
                        pending.remove(child)
                except httpx.HTTPError:
                    pass
            if time.monotonic() > deadline:
                names = ", ".join(c.name for c in pending)
                raise RuntimeError(f"not ready after {timeout:.0f}s: {names}; see {self.home}/logs")
            time.sleep(0.2)

    def heal(self) -> None:
        """Start again, after a backoff, each child that died; raise if one keeps dying.

        Said on the terminal each time, with the exit code: a restart must not go unseen.
        """
        now = time.monotonic()
        for child in self.children:
            if child.restart_at is not None:
                if now >= child.restart_at:
                    self._restart(child)
                continue
            code = child.process.poll()
            if code is None:
                continue
            child.deaths.append(now)
            deaths = child.recent_deaths(now)
            if deaths >= RESTART_LIMIT:
                tail = child.log.read_text(errors="replace").splitlines()[-15:]
                raise KeepsDying(
                    f"{child.name} died {deaths} times in {RESTART_WINDOW_SECONDS:.0f}s "
                    f"(last exit code {code}); giving up and stopping everything. Last lines of "
                    f"{child.log}:\n" + "\n".join(tail)
                )
            delay = min(RESTART_MAX_DELAY_SECONDS, RESTART_FIRST_DELAY_SECONDS * 2 ** (deaths - 1))
            child.restart_at = now + delay
            self.say(
                f"{child.name} exited with code {code}; restarting it in {delay:g}s "
                f"({deaths} of {RESTART_LIMIT} deaths allowed in {RESTART_WINDOW_SECONDS:.0f}s, "
                f"log {child.log})"
            )

    def _restart(self, child: Child) -> None:
        child.restart_at = None
        try:
            child.process = child.spawn()
        except (OSError, RuntimeError, TimeoutError) as exc:
            # Counted as one more death at the next look: the backoff and the limit apply.
            self.say(f"{child.name} did not start again: {exc}")
            return
        self.say(f"{child.name} restarted (pid {child.process.pid})")

    def stop(self) -> None:
        services = [child for child in self.children if child.name != "nats"]
        for child in services:
            if child.process.poll() is None:
                child.process.terminate()
        for child in services:
            try:
                child.process.wait(10)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
        if self.nats:  # last: the services drain their connections to it as they stop
            self.nats.stop()
        if self.lock.exists() and self.lock.read_text().strip() == str(os.getpid()):
            (self.home / PROVIDER_MARK).unlink(missing_ok=True)
            self.lock.unlink()


# Written by a `bangfu up --idp` while its provider runs: the provider's issuer.
PROVIDER_MARK = "idp.issuer"


def running_provider(home: Path) -> tuple[str, Path] | None:
    """The issuer and keys file of the provider that a running `bangfu up --idp` of this home
    started, or None: its services accept only that provider's keys."""
    try:
        pid = int((home / "up.pid").read_text().strip() or 0)
        issuer = (home / PROVIDER_MARK).read_text().strip()
    except (OSError, ValueError):
        return None
    if not pid or not _alive(pid) or not issuer:
        return None
    return issuer, home / "idp-keys.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_until_signalled(supervisor: Supervisor, *, on_ready: Callable[[], None]) -> None:
    """Start everything, call `on_ready`, then wait for Ctrl-C or SIGTERM and stop everything."""

    def _terminate(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    try:
        supervisor.start()
        on_ready()
        while True:
            supervisor.heal()
            time.sleep(0.5)
    except KeyboardInterrupt:
        supervisor.say("\nstopping Bangfu…")
    finally:
        supervisor.stop()
