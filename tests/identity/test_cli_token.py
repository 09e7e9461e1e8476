"""`bangfu token --client ID --secret S` against the real provider: the token it prints is one
the services accept, and every way of not getting it is a clear message and a non-zero exit."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from bangfu.cli import app
from shared.auth import Principal, TokenVerifier
from shared.natsserver import free_port
from shared.settings import SuiteSettings
from tests.identity.conftest import RunningIdp

DEPARTMENT = "dept-4113"


@pytest.fixture(autouse=True)
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No BANGFU_* variable of the machine leaks in; BANGFU_HOME is the test's own folder."""
    for name in list(os.environ):
        if name.startswith("BANGFU_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("BANGFU_HOME", str(tmp_path))
    return tmp_path


def bangfu(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def secret_of(idp: RunningIdp, client_id: str) -> str:
    secret = idp.registrations.clients[client_id].secret
    assert secret is not None
    return secret


def accepted_by_the_services(idp: RunningIdp, token: str) -> Principal:
    """What a service validating against this provider (discovery, JWKS) reads from the token.

    The tests that call it are synchronous, as a shell is: the command runs its own event loop.
    """
    verifier = TokenVerifier.from_settings(SuiteSettings(auth_issuer=idp.issuer))
    return asyncio.run(verifier.verify(token))


def test_a_department_client_gets_the_token_the_services_accept(idp: RunningIdp) -> None:
    result = bangfu(
        "token",
        "--issuer",
        idp.issuer,
        "--client",
        DEPARTMENT,
        "--secret",
        secret_of(idp, DEPARTMENT),
    )

    assert result.exit_code == 0, result.stderr
    (token,) = result.stdout.splitlines()  # the token alone: $(bangfu token …) works
    assert accepted_by_the_services(idp, token) == Principal(
        client_id=DEPARTMENT,
        scopes=frozenset({"registry:read", "registry:write"}),  # every scope of the client
        regions=("4113",),
    )


def test_the_issuer_is_the_services_and_the_secret_may_come_from_the_environment(
    idp: RunningIdp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BANGFU_AUTH_ISSUER", idp.issuer)
    monkeypatch.setenv("BANGFU_CLIENT_SECRET", secret_of(idp, DEPARTMENT))

    result = bangfu("token", "--client", DEPARTMENT, "--scope", "registry:read")

    assert result.exit_code == 0, result.stderr
    principal = accepted_by_the_services(idp, result.stdout.strip())
    assert principal.scopes == frozenset({"registry:read"})


def test_a_scope_the_client_may_not_have_is_an_error_not_a_narrower_token(
    idp: RunningIdp,
) -> None:
    result = bangfu(
        "token",
        "--issuer",
        idp.issuer,
        "--client",
        DEPARTMENT,
        "--secret",
        secret_of(idp, DEPARTMENT),
        "--scope",
        "registry:read benefits:admin",
    )

    assert result.exit_code == 1
    assert result.stdout == ""
    assert "not allowed benefits:admin" in result.stderr
    assert "only 'registry:read'" in result.stderr


def test_a_wrong_secret_is_a_clear_error(idp: RunningIdp) -> None:
    result = bangfu("token", "--issuer", idp.issuer, "--client", DEPARTMENT, "--secret", "wrong")

    assert result.exit_code == 1
    assert result.stdout == ""
    assert f"refused client {DEPARTMENT}: invalid_client" in result.stderr
    assert "wrong secret or an unknown client" in result.stderr


def test_a_provider_that_does_not_answer_is_a_clear_error() -> None:
    issuer = f"http://127.0.0.1:{free_port()}"

    result = bangfu("token", "--issuer", issuer, "--client", DEPARTMENT, "--secret", "s")

    assert result.exit_code == 1
    assert result.stdout == ""
    assert f"the identity provider at {issuer} does not answer" in result.stderr


def test_an_issuer_other_than_the_one_the_provider_states_is_refused(idp: RunningIdp) -> None:
    """The token would carry the provider's issuer, not the one asked for: say which it is."""
    result = bangfu(
        "token",
        "--issuer",
        f"{idp.issuer}/",
        "--client",
        DEPARTMENT,
        "--secret",
        secret_of(idp, DEPARTMENT),
    )

    assert result.exit_code == 1
    assert result.stdout == ""
    assert f"states issuer '{idp.issuer}'" in result.stderr
    assert "--issuer" in result.stderr


def test_no_development_token_when_the_services_accept_only_the_providers(
    idp: RunningIdp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BANGFU_AUTH_ISSUER", idp.issuer)

    result = bangfu("token", "--regions", "4113")

    assert result.exit_code == 2
    assert result.stdout == ""
    assert "--client ID --secret S" in result.stderr


@pytest.mark.parametrize(
    "arguments",
    [
        ["--client", DEPARTMENT, "--secret", "s", "--regions", "4101"],
        ["--client", DEPARTMENT, "--secret", "s", "--hours", "1"],
        ["--client", DEPARTMENT],
        ["--secret", "s"],
    ],
    ids=["regions", "hours", "no-secret", "no-client"],
)
def test_development_options_and_client_options_do_not_mix(arguments: list[str]) -> None:
    result = bangfu("token", *arguments)

    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
