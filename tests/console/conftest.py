"""The console against real processes: the OpenID provider (node), the registry over HTTP.

`console_idp`: one provider for the session whose clients file lets the console, on a port
chosen once for the session, sign people in (its redirect URI and post-logout URI). `stack`:
a registry served over HTTP that trusts that provider, and the console in front of it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest
from fastapi import FastAPI

import tests.conftest
from services.console.app import create_app as create_console
from services.console.settings import ConsoleSettings
from services.registry.app import create_app as create_registry
from services.registry.settings import RegistrySettings
from shared.migrations import upgrade
from shared.natsserver import free_port
from shared.settings import SuiteSettings
from tests.conftest import serving
from tests.identity.conftest import RunningIdp, require_node
from tests.identity.conftest import idp_factory as idp_factory  # the fixture, for these tests

CONSOLE_CLIENT = "bangfu-console"


@dataclass(frozen=True)
class ConsoleIdp:
    idp: RunningIdp
    console_port: int

    @property
    def console_url(self) -> str:
        return f"http://127.0.0.1:{self.console_port}"

    def password(self, username: str) -> str:
        secret = self.idp.registrations.people[username].secret
        assert secret is not None
        return secret


def for_the_console(idp: RunningIdp) -> ConsoleIdp:
    """Register a console on a free port with the provider (redirect and post-logout URIs)."""
    port = free_port()
    document = json.loads(idp.clients_file.read_text(encoding="utf-8"))
    for client in document["clients"]:
        if client["client_id"] == CONSOLE_CLIENT:
            client["redirect_uris"] = [f"http://127.0.0.1:{port}/auth/callback"]
            client["post_logout_redirect_uris"] = [f"http://127.0.0.1:{port}/"]
    idp.clients_file.write_text(json.dumps(document), encoding="utf-8")
    idp.reload()
    return ConsoleIdp(idp, port)


@pytest.fixture(scope="session")
def console_idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleIdp]:
    require_node()
    idp = RunningIdp(tmp_path_factory.mktemp("console-idp"))
    yield for_the_console(idp)
    idp.stop()


@dataclass(frozen=True)
class Stack:
    console_url: str
    registry_url: str
    idp: ConsoleIdp


def console_settings(console_idp: ConsoleIdp, registry_url: str, home: Path) -> ConsoleSettings:
    """Settings for a console on the registered port, its sessions table migrated (in SQLite
    under `home`)."""
    settings = ConsoleSettings(
        suite=SuiteSettings(home=home, auth_issuer=console_idp.idp.issuer),
        port=console_idp.console_port,
        public_url=console_idp.console_url,
        registry_url=registry_url,
    )
    migrate_console(*settings.database)
    return settings


def migrate_console(url: str, schema: str | None) -> None:
    """The console's migration, in a thread: Alembic runs its own event loop, and async tests
    call this from theirs."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(upgrade, "console", url=url, schema=schema).result()


@contextlib.contextmanager
def running_stack(
    console_idp: ConsoleIdp, registry_settings: RegistrySettings, home: Path
) -> Iterator[Stack]:
    """The registry (trusting the provider) over HTTP, and the console on its registered port."""
    suite = registry_settings.suite.model_copy(update={"auth_issuer": console_idp.idp.issuer})
    with serving(create_registry(registry_settings.model_copy(update={"suite": suite}))) as url:
        settings = console_settings(console_idp, url, home)
        with serving_on(create_console(settings), console_idp.console_port) as console_url:
            yield Stack(console_url, url, console_idp)


@pytest.fixture
def stack(
    console_idp: ConsoleIdp, registry_settings: RegistrySettings, tmp_path: Path
) -> Iterator[Stack]:
    with running_stack(console_idp, registry_settings, tmp_path) as running:
        yield running


@contextlib.contextmanager
def serving_on(app: FastAPI, port: int) -> Iterator[str]:
    """`tests.conftest.serving` on a given port: the one the provider redirects to."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tests.conftest, "free_port", lambda: port)
        with serving(app) as url:
            yield url


def sign_in(client: httpx.Client, stack: Stack, username: str) -> httpx.Response:
    """Sign in through the console and the provider's real login form; the home page after."""
    start = client.get(f"{stack.console_url}/auth/login")
    assert start.status_code == 303, start.text
    interaction = client.get(start.headers["location"])  # the provider: to its login page
    assert interaction.status_code == 303, interaction.text
    form_url = urljoin(str(interaction.url), interaction.headers["location"])
    form = client.get(form_url)
    action = re.search(r'action="([^"]+)"', form.text)
    assert action, form.text
    answer = client.post(
        urljoin(form_url, action.group(1)),
        data={"username": username, "password": stack.idp.password(username)},
    )
    while answer.status_code in (302, 303):
        answer = client.get(urljoin(str(answer.url), answer.headers["location"]))
    return answer


def csrf_of(page: httpx.Response) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match, page.text[:2000]
    return match.group(1)
