"""docker-compose.yml: valid Compose, wired in the right order, configured only by settings."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from bangfu.embedded import SETTINGS
from sandbox.settings import SandboxSettings
from services.console.settings import ConsoleSettings, SessionStoreSettings
from shared.identity import DEVELOPMENT_FEED_KEY
from shared.observability import TracingSettings
from shared.settings import SuiteSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SERVICES = ("registry", "verification", "benefits", "notifications")
# The services that call the registry, each as a client of the identity provider.
CALLERS = ("verification", "benefits", "notifications")
IDP_DIR = ROOT / "deploy" / "idp"
# Published on loopback unless the operator names another address.
PUBLISHED_ON = "${BANGFU_PUBLISH_ADDRESS:-127.0.0.1}"
_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")
_IDP_VARIABLE = re.compile(r"\bBANGFU_IDP_[A-Z_]+\b")


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())  # resolves the << merges
    return loaded


def settings_for(command: list[str]) -> list[type[BaseSettings]]:
    """The settings classes the process a container's command starts reads."""
    if command[0] == "services.console":
        return [SuiteSettings, ConsoleSettings]
    if command[0].startswith("services."):
        service = SETTINGS[command[0].removeprefix("services.")]
        return [SuiteSettings, service, TracingSettings]
    if command[0] == "sandbox":
        return [SandboxSettings]
    if command[0] == "bangfu":
        return [SuiteSettings, *SETTINGS.values(), SessionStoreSettings]
    raise AssertionError(f"unknown command {command}")


def variables(cls: type[BaseSettings]) -> set[str]:
    prefix = str(cls.model_config.get("env_prefix", ""))
    return {f"{prefix}{name}".upper() for name in cls.model_fields if name != "suite"}


def interpolated(value: object) -> str:
    """The value Compose would pass with an empty shell: `${X:-default}` -> default."""
    return _INTERPOLATION.sub(lambda match: match.group(2) or "", str(value))


def idp_variables() -> set[str]:
    """The BANGFU_IDP_* variables the provider's program reads (deploy/idp/*.mjs)."""
    sources = " ".join(path.read_text() for path in IDP_DIR.glob("*.mjs"))
    return set(_IDP_VARIABLE.findall(sources))


def bangfu_containers() -> dict[str, dict[str, Any]]:
    return {
        name: spec
        for name, spec in compose()["services"].items()
        if spec.get("image", "").startswith("bangfu:")
    }


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_validator_rejects_a_broken_compose_file(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("condition: service_healthy", "condition: up"))
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(broken),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1


def test_every_process_of_the_suite_runs_from_the_one_image() -> None:
    containers = bangfu_containers()
    commands = {name: spec["command"] for name, spec in containers.items()}
    assert commands == {
        "migrate": ["bangfu", "migrate"],
        **{service: [f"services.{service}"] for service in SERVICES},
        "console": ["services.console"],
        "sandbox": ["sandbox"],
    }
    assert {spec["build"]["dockerfile"] for spec in containers.values()} == {"deploy/Dockerfile"}


@pytest.mark.parametrize("container", ["migrate", *SERVICES, "console", "sandbox"])
def test_every_variable_set_is_a_setting_of_its_process(
    container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = compose()["services"][container]
    environment = {key: interpolated(value) for key, value in spec["environment"].items()}
    classes = settings_for(spec["command"])
    known = set().union(*(variables(cls) for cls in classes))
    assert sorted(set(environment) - known) == []
    # And the values parse: each process would start with this environment.
    for key in [key for key in os.environ if key.startswith("BANGFU_")]:
        monkeypatch.delenv(key)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    for cls in classes:
        cls()


def test_every_variable_given_to_the_provider_is_one_it_reads() -> None:
    environment = compose()["services"]["idp"]["environment"]
    read = idp_variables()
    assert {"BANGFU_IDP_ISSUER", "BANGFU_IDP_CLIENTS", "BANGFU_IDP_KEYS"} <= read
    assert sorted(set(environment) - read) == []


def test_the_variable_check_catches_a_misspelt_setting() -> None:
    known = variables(SuiteSettings) | variables(SETTINGS["registry"])
    assert "BANGFU_REGISTRY_PORT" in known
    assert "BANGFU_REGISTRY_PROT" not in known
    assert "BANGFU_NATS_URL" in known
    assert "BANGFU_REGISTRY_SUITE" not in known


def test_services_start_only_after_the_one_migration_job() -> None:
    services = compose()["services"]
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in SERVICES:
        depends = services[name]["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}
        assert depends["nats"] == {"condition": "service_healthy"}
        # Tokens are validated against the provider's keys: it answers before any service does.
        assert depends["idp"] == {"condition": "service_healthy"}
    assert services["verification"]["depends_on"]["sandbox"] == {"condition": "service_healthy"}
    # The console's sessions table is the job's too; it signs people in through the provider.
    console = services["console"]["depends_on"]
    assert console["migrate"] == {"condition": "service_completed_successfully"}
    assert console["idp"] == {"condition": "service_healthy"}
    # Only the job migrates: no service's start-up runs Alembic.
    for module in ("shared/service.py", "shared/serve.py", "services/console/app.py"):
        assert "upgrade" not in (ROOT / module).read_text()


def test_infrastructure_has_healthchecks_and_named_volumes() -> None:
    document = compose()
    services = document["services"]
    for name in ("postgres", "nats", "idp"):
        assert services[name]["healthcheck"]["test"]
    named = set(document["volumes"])
    assert named == {"postgres-data", "nats-data", "bangfu-home", "idp-keys"}
    mounted = {
        volume.split(":")[0]
        for spec in services.values()
        for volume in spec.get("volumes", [])
        if not volume.startswith((".", "${"))  # a file of this checkout, maybe overridden
    }
    assert mounted == named
    for spec in services.values():
        assert "env_file" not in spec, "configuration only through environment"


def test_nats_runs_jetstream_with_its_store_on_the_volume() -> None:
    services = compose()["services"]
    assert "./deploy/nats/nats.conf:/etc/nats/nats.conf:ro" in services["nats"]["volumes"]
    config = (ROOT / "deploy" / "nats" / "nats.conf").read_text()
    assert re.search(r"jetstream\s*\{[^}]*store_dir:\s*/data/jetstream", config)
    assert "http_port: 8222" in config  # the healthcheck's endpoint


def test_each_server_listens_where_it_is_published() -> None:
    """The port a process reads from its settings is the one compose publishes and checks."""
    for name, spec in bangfu_containers().items():
        if name == "migrate":
            continue
        prefix = "BANGFU_SANDBOX_" if name == "sandbox" else f"BANGFU_{name.upper()}_"
        port = spec["environment"][f"{prefix}PORT"]
        assert spec["ports"] == [f"{PUBLISHED_ON}:{port}:{port}"]
        assert spec["environment"][f"{prefix}HOST"] == "0.0.0.0"


def test_only_the_servers_people_call_are_published_and_on_loopback() -> None:
    """PostgreSQL and NATS are reached only inside the compose network; every published port
    binds 127.0.0.1 unless BANGFU_PUBLISH_ADDRESS says otherwise."""
    services = compose()["services"]
    published = {name for name, spec in services.items() if spec.get("ports")}
    assert published == {*SERVICES, "console", "sandbox", "idp"}
    for name in published:
        for port in services[name]["ports"]:
            assert port.startswith(f"{PUBLISHED_ON}:"), (name, port)


def test_every_substitution_is_one_podman_compose_reads() -> None:
    """podman-compose 1.0 (Debian's, which CI runs) leaves `${VAR:-}` and `${VAR-}` (an empty
    default) in place, literally: a setting would then read that text as its value."""
    assert not re.search(r"\$\{\w+:?-\}", COMPOSE.read_text())


def test_both_ends_of_the_change_feeds_take_the_one_feed_key() -> None:
    """Verification matches the sandbox's change feeds only with the sandbox's key: one
    variable, BANGFU_FEED_INDEX_KEY, sets both (the public development key when unset)."""
    services = compose()["services"]
    expected = f"${{BANGFU_FEED_INDEX_KEY:-{DEVELOPMENT_FEED_KEY}}}"

    assert services["verification"]["environment"]["BANGFU_VERIFICATION_FEED_INDEX_KEY"] == expected
    assert services["sandbox"]["environment"]["BANGFU_SANDBOX_PERSON_INDEX_KEY"] == expected


def test_the_identity_provider_runs_beside_the_services_under_the_one_issuer() -> None:
    """One issuer URL for the provider and every service: `iss` of each token is the provider's
    BANGFU_IDP_ISSUER, and a service accepts only BANGFU_AUTH_ISSUER's tokens."""
    services = compose()["services"]
    idp = services["idp"]
    assert idp["build"] == {"context": "deploy/idp"}
    assert (IDP_DIR / "Dockerfile").is_file()
    environment = idp["environment"]
    issuer = environment["BANGFU_IDP_ISSUER"]
    assert issuer == "http://idp:8180"
    port = environment["BANGFU_IDP_PORT"]
    assert issuer.endswith(f":{port}") and idp["ports"] == [f"{PUBLISHED_ON}:{port}:{port}"]
    assert environment["BANGFU_IDP_HOST"] == "0.0.0.0"
    # The image's own check (deploy/idp/healthcheck.mjs reads BANGFU_IDP_PORT; test_dockerfile).
    assert idp["healthcheck"]["test"] == ["CMD", "node", "healthcheck.mjs"]
    for name in (*SERVICES, "console"):
        assert services[name]["environment"]["BANGFU_AUTH_ISSUER"] == issuer, name
    # Signing keys outlive the container (tokens already issued stay valid across a restart).
    keys = Path(environment["BANGFU_IDP_KEYS"])
    assert any(volume == f"idp-keys:{keys.parent}" for volume in idp["volumes"])


def test_each_caller_is_a_client_of_the_provider_with_the_scopes_it_needs() -> None:
    """Each service that reads the registry logs in with the id and (laptop default) secret of
    a client in the clients file compose mounts, allowed registry:read and pii:read."""
    services = compose()["services"]
    idp = services["idp"]
    mounts = [interpolated(volume).split(":") for volume in idp["volumes"]]
    clients_path = idp["environment"]["BANGFU_IDP_CLIENTS"]
    (source,) = [mount[0] for mount in mounts if mount[1] == clients_path]
    clients_file = ROOT / source
    clients = {c["client_id"]: c for c in json.loads(clients_file.read_text())["clients"]}
    for name in CALLERS:
        environment = services[name]["environment"]
        prefix = f"BANGFU_{name.upper()}_"
        secret = environment[f"{prefix}CLIENT_SECRET"]
        # From the shell or .env when set; the default is the demo file's, for a laptop only.
        assert secret.startswith(f"${{{prefix}CLIENT_SECRET:-")
        client = clients[environment[f"{prefix}CLIENT_ID"]]
        assert client["client_secret"] == interpolated(secret), name
        assert "client_credentials" in client["grant_types"]
        assert {"registry:read", "pii:read"} <= set(client["scopes"]), name
    assert not any("CLIENT_SECRET" in key for key in services["registry"]["environment"])


def test_the_console_signs_in_at_a_redirect_uri_the_provider_registers() -> None:
    """The console's public URL (the browser's address for it) gives the callback and the
    post-logout URI that bangfu-console has in the clients file compose mounts; it is where
    compose publishes the console, and it calls the services by their compose names."""
    environment = compose()["services"]["console"]["environment"]
    public_url = interpolated(environment["BANGFU_CONSOLE_PUBLIC_URL"])
    assert public_url == "http://127.0.0.1:8105"
    clients = json.loads((IDP_DIR / "clients.json").read_text())["clients"]
    (console,) = [client for client in clients if client["client_id"] == "bangfu-console"]
    assert f"{public_url}/auth/callback" in console["redirect_uris"]
    assert f"{public_url}/" in console["post_logout_redirect_uris"]
    assert environment["BANGFU_CONSOLE_REGISTRY_URL"] == "http://registry:8101"
    assert environment["BANGFU_CONSOLE_VERIFICATION_URL"] == "http://verification:8102"
    assert environment["BANGFU_CONSOLE_BENEFITS_URL"] == "http://benefits:8103"
    # Sessions in the suite's PostgreSQL (schema console), as the migration job made it.
    assert environment["BANGFU_DATABASE_URL"].startswith("postgresql+asyncpg://")
