"""What a caller may reach and read: webhook destinations, its own delivery attempts, its regions.

Webhooks go only to public addresses unless the operator allows a network (the other tests'
receivers on loopback are allowed by the fixture); messages are read with a scope, inside the
caller's regions, confined in SQL before the page's limit.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.notifications import service, store, webhooks
from services.notifications.app import create_app
from services.notifications.channels.webhook import WebhookPools
from services.notifications.domain.destinations import DestinationPolicy, DestinationRefused
from services.notifications.settings import NotificationsSettings
from shared.crypto import encrypt
from shared.db import Database
from shared.events.envelope import new_event, new_event_id
from tests.conftest import running
from tests.helpers import bearer
from tests.services.notifications.conftest import SECRET, Publish, Receiver, eventually

ADMIN = "notifications:admin"
READ = "notifications:read"


class ConnectionCounter:
    """A real HTTP receiver on loopback that counts the connections reaching it (with TLS, the
    connections whose handshake completed)."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.connections = 0
        self.port = 0
        self._tls = tls
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self._tls)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()


@pytest.fixture
async def counter() -> AsyncIterator[ConnectionCounter]:
    found = ConnectionCounter()
    await found.start()
    yield found
    await found.stop()


@pytest.fixture
def strict_settings(notifications_settings: NotificationsSettings) -> NotificationsSettings:
    """The service as shipped: no internal network allowed."""
    return notifications_settings.model_copy(update={"webhook_allowed_networks": []})


@pytest.fixture
async def strict(strict_settings: NotificationsSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app(strict_settings)) as client:
        yield client


@pytest.fixture
async def notifications_db(
    notifications_settings: NotificationsSettings,
) -> AsyncIterator[Database]:
    url, schema = notifications_settings.database
    database = Database(url, schema=schema)
    yield database
    await database.dispose()


async def _register(
    client: httpx.AsyncClient, token: Callable[..., str], url: str, **fields: Any
) -> httpx.Response:
    body = {"url": url, "secret": SECRET, "event_types": ["*"], **fields}
    return await client.post("/v1/subscriptions", json=body, headers=bearer(token(ADMIN)))


async def _attempts(
    client: httpx.AsyncClient, token: Callable[..., str], subscription_id: str
) -> list[dict[str, Any]]:
    auth = bearer(token(ADMIN))
    path = f"/v1/subscriptions/{subscription_id}/deliveries"
    deliveries = (await client.get(path, headers=auth)).json()["items"]
    found: list[dict[str, Any]] = []
    for delivery in deliveries:
        response = await client.get(f"{path}/{delivery['id']}/attempts", headers=auth)
        found += response.json()
    return found


INTERNAL_URLS = [
    "http://10.0.0.5:5432/",
    "http://172.16.0.1:8080/hook",
    "http://192.168.1.1/",
    "http://127.0.0.1:8080/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/",
    "http://224.0.0.1/",
    "http://255.255.255.255/",
    "http://0.0.0.0:8080/",
    "http://2130706433:8080/",
    "http://0177.0.0.1:8080/",
    "http://0x7f.1:8080/",
    "http://[::1]:8080/",
    "http://[::]:8080/",
    "http://[fe80::1]:8080/",
    "http://[fc00::1]:8080/",
    "http://[fd12:3456::1]/",
    "http://[ff02::1]/",
    "http://[::ffff:127.0.0.1]:8080/",
    "http://[::ffff:10.0.0.5]/",
    "http://[2002:7f00:1::]/",
]


class TestDestinationsAtRegistration:
    @pytest.mark.parametrize("url", INTERNAL_URLS)
    async def test_an_internal_address_in_any_spelling_is_refused(
        self, strict: httpx.AsyncClient, token: Callable[..., str], url: str
    ) -> None:
        response = await _register(strict, token, url)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        [error] = response.json()["errors"]
        assert error["field"] == "url"
        assert "not a public address" in error["reason"]

    @pytest.mark.parametrize(
        ("url", "reason"),
        [
            ("https://user:pw@hooks.example.org/", "credentials"),
            ("https://hooks.example.org:22/", "port 22"),
            ("http://hooks.example.org:25/", "port 25"),
            ("ftp://hooks.example.org/", "URL scheme"),
        ],
    )
    async def test_credentials_low_ports_and_other_schemes_are_refused(
        self, strict: httpx.AsyncClient, token: Callable[..., str], url: str, reason: str
    ) -> None:
        response = await _register(strict, token, url)
        assert response.status_code == 422, response.text
        [error] = response.json()["errors"]
        assert error["field"] == "url" and reason in error["reason"]

    async def test_a_public_address_and_a_name_are_accepted(
        self, strict: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        for url in (
            "https://203.0.114.10/hook",
            "https://hooks.example.org/bangfu",
            "http://hooks.example.org:8443/bangfu",
        ):
            response = await _register(strict, token, url)
            assert response.status_code == 201, response.text

    async def test_an_allowed_network_may_be_registered(
        self, notifications: httpx.AsyncClient, token: Callable[..., str], receiver: Receiver
    ) -> None:
        assert (await _register(notifications, token, receiver.url)).status_code == 201


class TestDestinationsAtSend:
    async def test_a_name_resolving_to_loopback_is_refused_when_it_connects(
        self,
        strict: httpx.AsyncClient,
        token: Callable[..., str],
        counter: ConnectionCounter,
        publish: Publish,
    ) -> None:
        created = await _register(strict, token, f"http://localhost:{counter.port}/hook")
        assert created.status_code == 201, created.text  # a name: checked when it connects
        await publish("registry", "household", "changed", household_id="h-local")

        async def refused() -> bool:
            return bool(await _attempts(strict, token, created.json()["id"]))

        await eventually(refused)
        [first, *_] = await _attempts(strict, token, created.json()["id"])
        assert first["status_code"] is None
        assert first["error"] == (
            "refused: localhost does not resolve to a public address or an allowed network"
        )
        await asyncio.sleep(0.3)
        assert counter.connections == 0

    async def test_each_origin_has_a_pool_of_its_own_behind_the_policy(
        self, counter: ConnectionCounter
    ) -> None:
        pools = WebhookPools(DestinationPolicy(), timeout=2, concurrency=4)
        try:
            url = f"http://localhost:{counter.port}"
            pool = pools.target(f"{url}/a").pool
            assert pools.target(f"{url}/b").pool is pool
            assert pools.target(f"http://localhost:{counter.port + 1}/a").pool is not pool
            assert pools.target(f"https://localhost:{counter.port}/a").pool is not pool
            with pytest.raises(DestinationRefused, match="does not resolve to a public address"):
                await pools.post(f"{url}/a", b"{}", [])
            with pytest.raises(DestinationRefused, match="^port 22 is refused"):
                pools.target("http://hooks.example.org:22/a")  # its form, before any pool
            with pytest.raises(DestinationRefused, match="the URL is not valid"):
                pools.target("http://[zz]/a")  # refused as this delivery's error, not raised on
            await asyncio.sleep(0.1)
            assert counter.connections == 0
        finally:
            await pools.aclose()

    async def test_an_endless_answer_is_read_only_so_far_and_its_connection_closed(
        self,
    ) -> None:
        closed = asyncio.Event()
        sent = 0

        async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal sent
            await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(2)  # the body, b"{}"
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000\r\n\r\n")
            try:
                while True:
                    writer.write(b"x" * 16384)
                    sent += 16384
                    await writer.drain()
            except ConnectionError:
                closed.set()

        server = await asyncio.start_server(endless, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pools = WebhookPools(
            DestinationPolicy((ipaddress.ip_network("127.0.0.0/8"),)), timeout=5, concurrency=1
        )
        try:
            status = await asyncio.wait_for(pools.post(f"http://127.0.0.1:{port}/", b"{}", []), 10)
            await asyncio.wait_for(closed.wait(), 10)
        finally:
            await pools.aclose()
            server.close()
        assert status == 200
        # What it wrote before it saw the close: what was read, and the sockets' buffers.
        assert sent < 16 * 1024 * 1024

    async def test_the_same_receiver_is_reached_once_its_network_is_allowed(
        self,
        notifications: httpx.AsyncClient,
        token: Callable[..., str],
        counter: ConnectionCounter,
        publish: Publish,
    ) -> None:
        created = await _register(notifications, token, f"http://localhost:{counter.port}/hook")
        await publish("registry", "household", "changed", household_id="h-local")
        await eventually(lambda: counter.connections == 1)
        [attempt] = await _attempts(notifications, token, created.json()["id"])
        assert attempt["status_code"] == 204

    async def test_a_subscription_stored_before_the_policy_never_connects(
        self,
        strict_settings: NotificationsSettings,
        strict: httpx.AsyncClient,
        token: Callable[..., str],
        counter: ConnectionCounter,
        publish: Publish,
    ) -> None:
        url, schema = strict_settings.database
        database = Database(url, schema=schema)
        secret = encrypt(strict_settings.keyring(), SECRET, context=webhooks.SECRET_CONTEXT)
        now = datetime.now(UTC)
        async with database.unit_of_work() as uow:
            await store.insert_subscription(
                uow.session,
                {
                    "id": "legacy",
                    "owner": "test-client",
                    "url": f"http://127.0.0.1:{counter.port}/hook",
                    "secret_cipher": secret,
                    "event_types": ["*"],
                    "regions": ["41"],
                    "department": None,
                    "status": "active",
                    "created_at": now,
                    "updated_at": now,
                },
            )
            await uow.commit()
        await database.dispose()
        await publish("registry", "household", "changed", household_id="h-legacy")
        await eventually(lambda: _nonempty(_attempts(strict, token, "legacy")))
        [first, *_] = await _attempts(strict, token, "legacy")
        assert first["status_code"] is None and "not a public address" in first["error"]
        assert counter.connections == 0


async def _nonempty(items: Any) -> bool:
    return bool(await items)


def _tls(directory: Path, *, name: str) -> tuple[Path, ssl.SSLContext]:
    """A CA file, and a server context with a certificate for `name` that the CA signed."""
    now = datetime.now(UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CA")])

    def builder(subject: x509.Name, public: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(hours=1))
        )

    ca = (
        builder(ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server = (
        builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), key.public_key())
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca.public_bytes(pem))
    (directory / "server.pem").write_bytes(server.public_bytes(pem))
    (directory / "server.key").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(directory / "server.pem", directory / "server.key")
    return directory / "ca.pem", context


class TestTls:
    """The connection goes to a checked address, but TLS still checks the URL's name."""

    @pytest.mark.parametrize(("certified", "delivered"), [("localhost", True), ("other", False)])
    async def test_the_certificate_is_verified_for_the_urls_name(
        self,
        notifications_settings: NotificationsSettings,
        token: Callable[..., str],
        publish: Publish,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        certified: str,
        delivered: bool,
    ) -> None:
        ca_file, server_tls = _tls(tmp_path, name=certified)
        monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
        counter = ConnectionCounter(server_tls)
        await counter.start()
        try:
            async with running(create_app(notifications_settings)) as client:
                created = await _register(client, token, f"https://localhost:{counter.port}/h")
                await publish("registry", "household", "changed", household_id="h-tls")
                subscription = created.json()["id"]
                await eventually(lambda: _nonempty(_attempts(client, token, subscription)))
                [first, *_] = await _attempts(client, token, subscription)
        finally:
            await counter.stop()
        if delivered:
            assert first["status_code"] == 204 and counter.connections == 1
        else:
            assert first["status_code"] is None and counter.connections == 0
            assert "CERTIFICATE_VERIFY_FAILED" in first["error"]


class TestAttempts:
    async def test_the_attempts_of_another_subscriptions_delivery_are_not_found(
        self,
        notifications: httpx.AsyncClient,
        token: Callable[..., str],
        receiver: Receiver,
        publish: Publish,
    ) -> None:
        theirs = (await _register(notifications, token, receiver.url)).json()
        other = bearer(token(ADMIN, client_id="other-department"))
        mine = (
            await notifications.post(
                "/v1/subscriptions",
                json={"url": receiver.url, "secret": SECRET, "event_types": ["nothing.*"]},
                headers=other,
            )
        ).json()
        await publish("registry", "household", "changed", household_id="h-att")
        await eventually(lambda: len(receiver.events()) == 1)
        auth = bearer(token(ADMIN))
        path = f"/v1/subscriptions/{theirs['id']}/deliveries"
        [delivery] = (await notifications.get(path, headers=auth)).json()["items"]
        assert (await notifications.get(f"{path}/{delivery['id']}/attempts", headers=auth)).json()
        foreign = await notifications.get(
            f"/v1/subscriptions/{mine['id']}/deliveries/{delivery['id']}/attempts", headers=other
        )
        assert foreign.status_code == 404
        assert foreign.json()["detail"] == f"delivery {delivery['id']} not found"


class TestSubscriptionRegions:
    async def test_an_empty_region_list_is_refused_rather_than_meaning_everywhere(
        self, notifications: httpx.AsyncClient, token: Callable[..., str], receiver: Receiver
    ) -> None:
        response = await _register(notifications, token, receiver.url, regions=[])
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "regions"

    async def test_omitted_regions_are_the_tokens_own(
        self, notifications: httpx.AsyncClient, token: Callable[..., str], receiver: Receiver
    ) -> None:
        body = {"url": receiver.url, "secret": SECRET, "event_types": ["*"]}
        response = await notifications.post(
            "/v1/subscriptions", json=body, headers=bearer(token(ADMIN, regions=["4113", "4201"]))
        )
        assert response.status_code == 201
        assert response.json()["regions"] == ["4113", "4201"]

    async def test_a_token_without_regions_registers_nothing_and_sees_no_subscription(
        self, notifications: httpx.AsyncClient, token: Callable[..., str], receiver: Receiver
    ) -> None:
        created = (await _register(notifications, token, receiver.url)).json()
        nowhere = bearer(token(ADMIN, regions=[]))
        body = {"url": receiver.url, "secret": SECRET, "event_types": ["*"]}
        refused = await notifications.post("/v1/subscriptions", json=body, headers=nowhere)
        assert refused.status_code == 422
        assert refused.json()["errors"][0]["field"] == "regions"
        assert (await notifications.get("/v1/subscriptions", headers=nowhere)).json() == []
        one = await notifications.get(f"/v1/subscriptions/{created['id']}", headers=nowhere)
        assert one.status_code == 404

    async def test_a_stored_subscription_without_regions_receives_nothing(
        self, settings: NotificationsSettings, db: Database
    ) -> None:
        now = datetime.now(UTC)
        event = new_event(
            service="registry",
            aggregate="household",
            name="changed",
            subject="h-any",
            region="420102",
            sequence=1,
            data={"household_id": "h-any"},
        )
        async with db.unit_of_work() as uow:
            await store.insert_subscription(
                uow.session,
                {
                    "id": "no-regions",
                    "owner": "dept",
                    "url": "https://hooks.example.org/",
                    "secret_cipher": "",
                    "event_types": ["*"],
                    "regions": [],
                    "department": "renshe",
                    "status": "active",
                    "created_at": now,
                    "updated_at": now,
                },
            )
            fanned = await webhooks.fan_out(uow, event, now=now)
            referred = await service.queue_referral(
                uow,
                message={
                    "id": "m-1",
                    "recipient_id": "renshe:420102",
                    "household_id": "h-any",
                    "region": "420102",
                },
                data={"text": "转介", "cause": event.id},
                now=now,
            )
        assert (fanned, referred) == (0, 0)


def _message(*, region: str, cause: str, at: datetime, recipient: str) -> dict[str, Any]:
    return {
        "id": new_event_id(),
        "recipient_kind": "county_office",
        "recipient_id": region,
        "recipient_key": recipient,
        "channel": "inbox",
        "template": "visit_overdue",
        "cause": cause,
        "household_id": f"h-{region}",
        "region": region,
        "subject": None,
        "body": "请督促落实。",
        "status": "delivered",
        "not_before": at,
        "attempts": 0,
        "created_at": at,
        "sent_at": at,
        "delivered_at": at,
        "reason": None,
    }


async def _store_messages(database: Database, *, recipient: str | None = None) -> list[str]:
    """Five messages of region 420102, then three of 411302; their ids. Without a recipient
    they are one cause's, each to another recipient; with one, each has its own cause."""
    start = datetime.now(UTC) - timedelta(minutes=10)
    rows = [
        _message(
            region="420102" if n < 5 else "411302",
            cause="cause-x" if recipient is None else f"cause-{n}",
            at=start + timedelta(seconds=n),
            recipient=recipient or f"county_office:{n}",
        )
        for n in range(8)
    ]
    async with database.unit_of_work() as uow:
        for row in rows:
            assert await store.insert_message(uow.session, row)
        await uow.commit()
    return [row["id"] for row in rows]


class TestMessages:
    async def test_reading_messages_needs_the_read_scope(
        self, notifications: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        response = await notifications.get(
            "/v1/messages?cause=cause-x", headers=bearer(token("registry:read"))
        )
        assert response.status_code == 403
        assert response.json()["missing_scopes"] == [READ]

    async def test_a_page_is_full_when_other_regions_messages_come_first(
        self,
        notifications: httpx.AsyncClient,
        notifications_db: Database,
        token: Callable[..., str],
    ) -> None:
        ids = await _store_messages(notifications_db)
        response = await notifications.get(
            "/v1/messages?cause=cause-x&limit=3", headers=bearer(token(READ, regions=["4113"]))
        )
        assert [m["id"] for m in response.json()] == ids[5:]

    async def test_another_regions_message_is_not_found_even_by_its_recipient(
        self,
        notifications: httpx.AsyncClient,
        notifications_db: Database,
        token: Callable[..., str],
    ) -> None:
        ids = await _store_messages(notifications_db, recipient="county_office:420102")
        auth = bearer(token(READ, regions=["4113"], client_id="county_office:420102"))
        response = await notifications.get(f"/v1/messages/{ids[0]}", headers=auth)
        assert response.status_code == 404
        assert "420102" not in response.text
        assert (await notifications.get(f"/v1/messages/{ids[5]}", headers=auth)).status_code == 200

    async def test_a_token_without_regions_reads_no_message_and_an_empty_inbox(
        self,
        notifications: httpx.AsyncClient,
        notifications_db: Database,
        token: Callable[..., str],
    ) -> None:
        ids = await _store_messages(notifications_db, recipient="county")
        nowhere = bearer(token(READ, regions=[], client_id="county"))
        listed = await notifications.get("/v1/messages?cause=cause-5", headers=nowhere)
        assert listed.json() == []
        one = await notifications.get(f"/v1/messages/{ids[5]}", headers=nowhere)
        assert one.status_code == 404
        assert (await notifications.get("/v1/inbox", headers=nowhere)).json() == {
            "unread": 0,
            "items": [],
        }
        read = await notifications.post(f"/v1/inbox/{ids[5]}/read", headers=nowhere)
        assert read.status_code == 404

    async def test_the_inbox_holds_the_callers_messages_of_its_regions_only(
        self,
        notifications: httpx.AsyncClient,
        notifications_db: Database,
        token: Callable[..., str],
    ) -> None:
        ids = await _store_messages(notifications_db, recipient="county")
        mine = bearer(token(regions=["4113"], client_id="county"))
        inbox = (await notifications.get("/v1/inbox", headers=mine)).json()
        assert sorted(m["id"] for m in inbox["items"]) == sorted(ids[5:])
        assert inbox["unread"] == 3
        someone = bearer(token(regions=["41", "42"], client_id="someone-else"))
        assert (await notifications.get("/v1/inbox", headers=someone)).json()["items"] == []
        foreign = await notifications.post(f"/v1/inbox/{ids[5]}/read", headers=someone)
        assert foreign.status_code == 404
        outside = await notifications.post(f"/v1/inbox/{ids[0]}/read", headers=mine)
        assert outside.status_code == 404
