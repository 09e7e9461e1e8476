"""The production NATS configuration against a real nats-server: users, permissions, TLS."""

from __future__ import annotations

import asyncio
import importlib
import subprocess
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import ConsumerConfig, DeliverPolicy
from typer.testing import CliRunner

from bangfu.cli import AUTH_CONF_HEADER, app
from bangfu.embedded import SETTINGS
from bangfu.natsauth import authorization, suite_users
from services.notifications.history import events_between
from services.registry.app import create_app as create_registry
from services.registry.settings import RegistrySettings
from shared.events.streams import ensure_stream
from shared.natsserver import nats_server_binary
from shared.settings import SuiteSettings
from tests.conftest import running
from tests.deploy.conftest import INTEGRATOR, PASSWORDS, ROOT, SecuredNats, write_tls
from tests.deploy.manifests import K8S, render
from tests.eventkit import sample_event
from tests.helpers import bearer, household_body

NANYANG = "bangfu.registry.household.enrolled.41.13.02"
SHANGHAI = "bangfu.registry.household.enrolled.31.01.01"


class Client:
    """A connection that keeps every asynchronous error the server sent it."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.nc = NATS()

    async def connect(self, url: str, secured: SecuredNats, **options: Any) -> Client:
        async def on_error(exc: Exception) -> None:
            self.errors.append(str(exc))

        await self.nc.connect(
            url, tls=secured.tls(), error_cb=on_error, allow_reconnect=False, **options
        )
        return self

    async def settle(self) -> None:
        """Wait until the server has answered everything sent so far (errors included)."""
        await self.nc.flush(timeout=2)
        await asyncio.sleep(0.1)


@pytest.fixture
async def connect(secured_nats: SecuredNats) -> AsyncIterator[Callable[..., Any]]:
    clients: list[Client] = []

    async def make(user: str, password: str | None = None, **options: Any) -> Client:
        client = await Client().connect(secured_nats.url(user, password), secured_nats, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.nc.close()


async def integrator(connect: Callable[..., Any]) -> Client:
    name, password = INTEGRATOR
    client: Client = await connect(name, password, inbox_prefix=f"_INBOX_{name}")
    return client


def test_committed_auth_conf_is_what_nats_user_suite_prints() -> None:
    printed = CliRunner().invoke(app, ["nats-user", "--suite"])
    assert printed.exit_code == 0
    committed = (ROOT / "deploy" / "nats" / "auth.conf").read_text()
    assert printed.stdout == committed == AUTH_CONF_HEADER + authorization(suite_users())


async def test_anonymous_and_wrong_password_are_refused(secured_nats: SecuredNats) -> None:
    for url in (secured_nats.url(), secured_nats.url("registry", "wrong")):
        with pytest.raises(Exception, match="Authorization Violation"):
            await nats.connect(url, tls=secured_nats.tls(), allow_reconnect=False)


async def test_a_client_that_does_not_trust_the_ca_is_refused(secured_nats: SecuredNats) -> None:
    """TLS is required and the server's certificate is checked against the suite's CA."""
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        await nats.connect(secured_nats.url("registry"), allow_reconnect=False)


async def test_a_4113_integrator_receives_4113_and_is_refused_3101(
    connect: Callable[..., Any],
) -> None:
    registry = await connect("registry")
    js = registry.nc.jetstream()
    await ensure_stream(js, name="REGISTRY", subjects=["bangfu.registry.>"])
    reader = await integrator(connect)
    allowed = await reader.nc.subscribe("bangfu.registry.household.*.41.13.*")
    refused = await reader.nc.subscribe("bangfu.registry.household.*.31.01.*")
    everything = await reader.nc.subscribe("bangfu.>")
    others_replies = await reader.nc.subscribe("_INBOX.>")  # where services' fetches arrive
    await reader.settle()

    await js.publish(NANYANG, b'{"n": 1}')
    await js.publish(SHANGHAI, b'{"n": 2}')

    message = await allowed.next_msg(timeout=2)
    assert (message.subject, message.data) == (NANYANG, b'{"n": 1}')
    for subscription in (allowed, refused, everything, others_replies):
        with pytest.raises(nats.errors.TimeoutError):
            await subscription.next_msg(timeout=0.3)
    assert sorted(reader.errors) == [
        'nats: permissions violation for subscription to "_inbox.>"',  # lower-cased by nats-py
        'nats: permissions violation for subscription to "bangfu.>"',
        'nats: permissions violation for subscription to "bangfu.registry.household.*.31.01.*"',
    ]


async def test_an_integrator_replays_only_through_its_own_region_consumer(
    connect: Callable[..., Any],
) -> None:
    registry = await connect("registry")
    js = registry.nc.jetstream()
    await ensure_stream(js, name="REGISTRY", subjects=["bangfu.registry.>"])
    await js.publish(SHANGHAI, b'{"n": 0}')
    await js.publish(NANYANG, b'{"n": 1}')
    reader = await integrator(connect)
    rjs = reader.nc.jetstream(timeout=1)
    name = INTEGRATOR[0]

    await rjs.add_consumer(
        "REGISTRY",
        ConsumerConfig(
            name=f"{name}-4113",
            durable_name=f"{name}-4113",
            filter_subject="bangfu.registry.household.*.41.13.*",
            deliver_policy=DeliverPolicy.ALL,
        ),
    )
    pull = await rjs.pull_subscribe_bind(durable=f"{name}-4113", stream="REGISTRY")
    (message,) = await pull.fetch(1, timeout=2)
    assert message.subject == NANYANG
    await message.ack()

    for durable, filter_subject in (
        (f"{name}-3101", "bangfu.registry.household.*.31.01.*"),  # another region
        (f"{name}-4113", "bangfu.registry.>"),  # its own name, a wider filter
    ):
        with pytest.raises(Exception):  # noqa: B017 - refused: no answer, or an error
            await rjs.add_consumer(
                "REGISTRY",
                ConsumerConfig(name=durable, durable_name=durable, filter_subject=filter_subject),
            )
    # Nor may it pull from a service's durable consumer, which reads every region.
    benefits = await connect("benefits")
    await benefits.nc.jetstream().add_consumer(
        "REGISTRY", ConsumerConfig(durable_name="benefits-household")
    )
    with pytest.raises(Exception):  # noqa: B017
        stolen = await rjs.pull_subscribe_bind(durable="benefits-household", stream="REGISTRY")
        await stolen.fetch(1, timeout=1)


async def test_a_service_publishes_only_its_own_subjects(
    connect: Callable[..., Any], secured_nats: SecuredNats
) -> None:
    registry = await connect("registry")
    await registry.nc.publish("bangfu.registry.household.enrolled.41.13.02", b"{}")
    await registry.nc.publish("bangfu.benefits.payment.made.41.13.02", b"{}")
    await registry.settle()
    assert registry.errors == [
        'nats: permissions violation for publish to "bangfu.benefits.payment.made.41.13.02"'
    ]
    (logged,) = secured_nats.violations()  # what the runtime tests look for
    assert '"$G/user:registry"' in logged and "bangfu.benefits.payment.made" in logged


async def test_a_service_may_not_delete_inspect_or_read_what_another_service_owns(
    connect: Callable[..., Any], secured_nats: SecuredNats
) -> None:
    """Each service's JetStream API is its own streams and durable consumers, nothing else."""
    registry = await connect("registry")
    rjs = registry.nc.jetstream(timeout=1)
    await ensure_stream(rjs, name="REGISTRY", subjects=["bangfu.registry.>"])
    verification = await connect("verification")
    vjs = verification.nc.jetstream(timeout=1)
    await vjs.add_consumer(  # verification's own durable on the registry's stream: allowed
        "REGISTRY",
        ConsumerConfig(
            durable_name="verification-household-applied",
            filter_subject="bangfu.registry.household.applied.>",
        ),
    )
    await registry.nc.jetstream().publish(NANYANG.replace("enrolled", "applied"), b"{}")
    benefits = await connect("benefits")
    bjs = benefits.nc.jetstream(timeout=1)

    attempts = {
        "delete the registry's stream": bjs.delete_stream("REGISTRY"),
        "purge the registry's stream": bjs.purge_stream("REGISTRY"),
        "read the registry's stream's messages": bjs.get_msg("REGISTRY", 1),
        "delete verification's consumer": bjs.delete_consumer(
            "REGISTRY", "verification-household-applied"
        ),
        "inspect verification's consumer": bjs.consumer_info(
            "REGISTRY", "verification-household-applied"
        ),
        "create a consumer under verification's name": bjs.add_consumer(
            "REGISTRY", ConsumerConfig(durable_name="verification-household-applied")
        ),
        "create a consumer of no name of its own": bjs.add_consumer(
            "REGISTRY", ConsumerConfig(durable_name="anything")
        ),
        "delete its own stream": bjs.delete_stream("BENEFITS"),
        "list every stream": bjs.streams_info(),
    }
    refused = []
    for attempt, call in attempts.items():
        try:
            await call
        except Exception:  # noqa: BLE001 - refused: no answer within the timeout
            refused.append(attempt)
    stolen = await bjs.pull_subscribe_bind(
        durable="verification-household-applied", stream="REGISTRY"
    )
    with pytest.raises(Exception):  # noqa: B017
        await stolen.fetch(1, timeout=1)
    await benefits.settle()

    assert refused == list(attempts)
    assert len(benefits.errors) == len(attempts) + 1  # one permissions violation each
    assert all('permissions violation for publish to "$js.api.' in e for e in benefits.errors)
    assert verification.errors == registry.errors == []
    info = await vjs.consumer_info("REGISTRY", "verification-household-applied")
    assert info.num_pending == 1  # nobody took verification's message


async def test_notifications_reads_the_event_history_for_replays_under_its_user(
    connect: Callable[..., Any], secured_nats: SecuredNats
) -> None:
    """Its short-lived history readers (random names) are allowed on every stream."""
    registry = await connect("registry")
    await ensure_stream(registry.nc.jetstream(), name="REGISTRY", subjects=["bangfu.registry.>"])
    event = sample_event("household-1", 1)
    await registry.nc.jetstream().publish(event.nats_subject, event.to_json())
    notifications = await connect("notifications")

    found = await events_between(
        notifications.nc.jetstream(timeout=2),
        since=event.time - timedelta(minutes=1),
        until=event.time + timedelta(minutes=1),
        limit=10,
    )

    assert [e.id for e in found] == [event.id]
    assert notifications.errors == []
    assert secured_nats.violations() == []


@pytest.mark.parametrize("service", ["verification", "benefits", "notifications"])
async def test_each_service_runs_under_its_user_without_a_refusal(
    service: str,
    secured_nats: SecuredNats,
    tmp_path: Path,
    migrated_database: Callable[..., Any],
) -> None:
    """Its streams, consumers and relay all work with only its own permissions."""
    url, schema = await migrated_database(service)
    suite = SuiteSettings(  # the private CA through BANGFU_NATS_CA_FILE
        home=tmp_path / "home",
        nats_url=secured_nats.url(service),
        nats_ca_file=secured_nats.ca_file,
        rate_limit_per_second=0,
    )
    settings = SETTINGS[service](suite=suite, database_url=url, database_schema=schema)
    factory = importlib.import_module(f"services.{service}.app").create_app
    async with running(factory(settings)) as client:
        assert (await client.get("/readyz")).status_code == 200
        await asyncio.sleep(1.5)  # relay polls, consumers fetch, lag is reported
    assert secured_nats.violations() == []


async def test_the_registry_runs_under_its_user_and_an_integrator_gets_its_events(
    connect: Callable[..., Any],
    secured_nats: SecuredNats,
    tmp_path: Path,
    migrated_database: Callable[..., Any],
    token: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The permissions are enough for a real service: relay, streams, consumers, all of it."""
    monkeypatch.setenv("SSL_CERT_FILE", str(secured_nats.ca_file))  # nats-py's default context
    url, schema = await migrated_database("registry")
    suite = SuiteSettings(
        home=tmp_path / "home", nats_url=secured_nats.url("registry"), rate_limit_per_second=0
    )
    reader = await integrator(connect)
    events = await reader.nc.subscribe("bangfu.registry.household.*.41.13.*")
    await reader.settle()
    settings = RegistrySettings(suite=suite, database_url=url, database_schema=schema)
    async with running(create_registry(settings)) as registry:
        assert (await registry.get("/readyz")).status_code == 200
        filed = await registry.post(
            "/v1/households",
            json=household_body("411302"),
            headers=bearer(token("registry:write", "registry:read")),
        )
        assert filed.status_code == 201, filed.text
        message = await events.next_msg(timeout=5)
    assert message.subject == "bangfu.registry.household.applied.41.13.02"
    assert reader.errors == []
    assert secured_nats.violations() == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nats-user", "acme"], "at least one region"),
        (["nats-user", "acme.all", "--regions", "4113"], "integrator name"),
        (["nats-user", "acme", "--regions", "411"], "2, 4 or 6 digits"),
        (["nats-user", "--regions", "4113"], "give the integrator's name"),
    ],
)
def test_nats_user_refuses_what_would_widen_or_break_permissions(
    args: list[str], message: str
) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_the_kubernetes_cluster_config_is_accepted_by_nats_server(tmp_path: Path) -> None:
    """The rendered ConfigMap with the committed auth.conf: nats-server's own config check."""
    (config_map,) = [
        document
        for document in render(K8S / "overlays" / "production")
        if document["kind"] == "ConfigMap" and document["metadata"]["name"].startswith("nats")
    ]
    tls = write_tls(tmp_path / "tls")
    text = config_map["data"]["nats.conf"].replace("/etc/nats/tls/", f"{tls}/")
    (tmp_path / "auth").mkdir()
    (tmp_path / "auth" / "auth.conf").write_text((ROOT / "deploy/nats/auth.conf").read_text())
    (tmp_path / "nats.conf").write_text(text.replace("/data/jetstream", str(tmp_path / "js")))
    env = {f"BANGFU_NATS_{user.upper()}_PASSWORD": pw for user, pw in PASSWORDS.items()}
    checked = subprocess.run(
        [nats_server_binary(), "-c", str(tmp_path / "nats.conf"), "-t"],
        env={**env, "POD_NAME": "nats-0", "PATH": ""},
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "is valid" in checked.stdout + checked.stderr
    # The check is real: a broken file fails it.
    (tmp_path / "nats.conf").write_text(text.replace("cluster {", "cluster {{"))
    broken = subprocess.run(
        [nats_server_binary(), "-c", str(tmp_path / "nats.conf"), "-t"],
        env={**env, "POD_NAME": "nats-0", "PATH": ""},
        capture_output=True,
        text=True,
        check=False,
    )
    assert broken.returncode != 0
