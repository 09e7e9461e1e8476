"""SMS through the gateway sandbox and email through a local SMTP server, end to end.

The phone number comes from the registry (a real registry app over HTTP, read with pii:read);
events carry only ids, which the session-wide bus scanner checks.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import nats
import pytest
from aiosmtpd.controller import Controller
from pydantic import SecretStr

from sandbox.sms.app import SmsSandboxSettings
from sandbox.sms.app import create_app as create_sms_gateway
from services.notifications import store
from services.notifications.app import create_app
from services.notifications.dispatch import Dispatcher
from services.notifications.settings import NotificationsSettings
from shared.db import Database
from shared.natsserver import free_port
from shared.registry_client import RegistryClient
from tests.conftest import running, serving
from tests.helpers import bearer, household_body, identity_number
from tests.services.notifications.conftest import Publish, eventually
from tests.services.notifications.samples import MEASURES, SAMPLES

GATEWAY_KEY = "sandbox-key"


class Mailbox:
    """An aiosmtpd handler keeping every mail it is given."""

    def __init__(self) -> None:
        self.mails: list[tuple[list[str], Any]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        mail = message_from_bytes(envelope.content, policy=policy.default)
        self.mails.append((list(envelope.rcpt_tos), mail))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[int, Mailbox]]:
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield port, mailbox
    controller.stop()


@pytest.fixture
def sms_gateway() -> Iterator[str]:
    settings = SmsSandboxSettings(api_key=GATEWAY_KEY, delivery_delay_ms=50, smtp_port=0)
    with serving(create_sms_gateway(settings)) as url:
        yield url


@pytest.fixture
def channel_settings(
    notifications_settings: NotificationsSettings,
    registry_server: str,
    sms_gateway: str,
    smtp: tuple[int, Mailbox],
) -> NotificationsSettings:
    return notifications_settings.model_copy(
        update={
            "registry_url": registry_server,
            "sms_gateway_url": sms_gateway,
            "sms_gateway_key": SecretStr(GATEWAY_KEY),
            "smtp_port": smtp[0],
        }
    )


@pytest.fixture
async def notifications(
    channel_settings: NotificationsSettings,
) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app(channel_settings)) as client:
        yield client


async def file_household(
    registry_server: str, token: Callable[..., str], *, phone: str | None, serial: int
) -> str:
    body = household_body(head_number=identity_number(serial=serial))
    if phone:
        body["members"][0]["phone"] = phone  # type: ignore[index]
    async with httpx.AsyncClient(base_url=registry_server) as registry:
        response = await registry.post(
            "/v1/households", json=body, headers=bearer(token("registry:write"))
        )
    assert response.status_code == 201, response.text
    household_id: str = response.json()["id"]
    return household_id


async def sms_of(
    client: httpx.AsyncClient, token: Callable[..., str], household_id: str
) -> list[dict[str, Any]]:
    response = await client.get(
        f"/v1/messages?household_id={household_id}", headers=bearer(token("notifications:read"))
    )
    return [m for m in response.json() if m["channel"] == "sms"]


async def settled_sms(
    client: httpx.AsyncClient, token: Callable[..., str], household_id: str, *, count: int = 1
) -> list[dict[str, Any]]:
    async def done() -> bool:
        found = await sms_of(client, token, household_id)
        return len(found) == count and all(m["status"] in ("delivered", "failed") for m in found)

    await eventually(done, timeout=20)
    return await sms_of(client, token, household_id)


async def entitlements(publish: Publish, household_id: str) -> None:
    await publish(
        "benefits",
        "entitlements",
        "determined",
        household_id=household_id,
        data={"measures": MEASURES},
    )


class TestSms:
    async def test_an_sms_reaches_the_heads_phone_and_is_reported_delivered(
        self,
        notifications: httpx.AsyncClient,
        token: Callable[..., str],
        publish: Publish,
        registry_server: str,
        sms_gateway: str,
    ) -> None:
        household_id = await file_household(registry_server, token, phone="13912345678", serial=1)
        await entitlements(publish, household_id)
        [sms] = await settled_sms(notifications, token, household_id)
        assert sms["status"] == "delivered" and sms["sent_at"] and sms["delivered_at"]
        async with httpx.AsyncClient(base_url=sms_gateway) as gateway:
            sent = (
                await gateway.get(
                    "/v1/messages",
                    params={"to": "13912345678"},
                    headers={"Authorization": f"Bearer {GATEWAY_KEY}"},
                )
            ).json()
        assert [s["text"] for s in sent] == [sms["body"]]
        assert "13912345678" not in sms["body"]

    async def test_an_unreachable_number_fails_with_the_operators_reason_on_the_bus(
        self,
        notifications: httpx.AsyncClient,
        token: Callable[..., str],
        publish: Publish,
        registry_server: str,
        nats_url: str,
    ) -> None:
        nc = await nats.connect(nats_url)
        failed: list[dict[str, Any]] = []

        async def collect(message: Any) -> None:
            failed.append(json.loads(message.data)["data"])

        await nc.subscribe("bangfu.notifications.notification.failed.>", cb=collect)
        household_id = await file_household(registry_server, token, phone="19900001234", serial=2)
        await entitlements(publish, household_id)
        [sms] = await settled_sms(notifications, token, household_id)
        await eventually(lambda: any(f["channel"] == "sms" for f in failed))
        await nc.close()
        assert (sms["status"], sms["reason"]) == ("failed", "unreachable subscriber")
        [event] = [f for f in failed if f["channel"] == "sms"]
        assert event["message_id"] == sms["id"] and event["recipient"] is None

    async def test_a_household_without_a_phone_fails_with_that_reason(
        self,
        notifications: httpx.AsyncClient,
        token: Callable[..., str],
        publish: Publish,
        registry_server: str,
    ) -> None:
        household_id = await file_household(registry_server, token, phone=None, serial=3)
        await entitlements(publish, household_id)
        [sms] = await settled_sms(notifications, token, household_id)
        assert sms["reason"] == "no mobile number on file for the household"


class TestSmsLimits:
    async def test_a_second_sms_within_a_day_waits_until_the_first_is_a_day_old(
        self,
        channel_settings: NotificationsSettings,
        token: Callable[..., str],
        publish: Publish,
        registry_server: str,
    ) -> None:
        settings = channel_settings.model_copy(update={"sms_per_recipient_per_day": 1})
        async with running(create_app(settings)) as client:
            household_id = await file_household(
                registry_server, token, phone="13912340000", serial=4
            )
            await entitlements(publish, household_id)
            await settled_sms(client, token, household_id)
            await publish(
                "benefits",
                "entitlements",
                "changed",
                household_id=household_id,
                data={"measures": MEASURES[:1]},
            )
            await eventually(lambda: _count(sms_of(client, token, household_id), 2))
            first, second = await sms_of(client, token, household_id)
        assert (first["status"], second["status"]) == ("delivered", "queued")
        day_later = datetime.fromisoformat(first["sent_at"]) + timedelta(days=1)
        assert datetime.fromisoformat(second["send_after"]) == day_later

    async def test_an_sms_in_quiet_hours_waits_for_their_end(
        self,
        channel_settings: NotificationsSettings,
        token: Callable[..., str],
        publish: Publish,
        registry_server: str,
    ) -> None:
        zone = ZoneInfo("Asia/Shanghai")
        now = datetime.now(zone)
        settings = channel_settings.model_copy(
            update={"sms_quiet_start_hour": now.hour, "sms_quiet_end_hour": (now.hour + 1) % 24}
        )
        async with running(create_app(settings)) as client:
            household_id = await file_household(
                registry_server, token, phone="13912340001", serial=5
            )
            await entitlements(publish, household_id)
            await eventually(lambda: _count(sms_of(client, token, household_id), 1))
            await asyncio.sleep(0.3)  # the dispatcher would have sent it by now
            [sms] = await sms_of(client, token, household_id)
        assert sms["status"] == "queued"
        wake = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        assert datetime.fromisoformat(sms["send_after"]) == wake


async def _count(items: Any, n: int) -> bool:
    return len(await items) == n


class TestEmail:
    async def test_a_discrepancy_is_mailed_to_the_county_office(
        self,
        notifications: httpx.AsyncClient,
        token: Callable[..., str],
        publish: Publish,
        smtp: tuple[int, Mailbox],
    ) -> None:
        _, mailbox = smtp
        event = await publish(
            "verification",
            "verification",
            "completed",
            household_id="hh-mail",
            data=SAMPLES["verification.verification.completed"],
        )
        await eventually(lambda: bool(mailbox.mails))
        [(recipients, mail)] = mailbox.mails
        assert recipients == ["county_office-411302@bangfu.local"]
        assert mail["Subject"] == "核对差异待复核：档案号 hh-mail"
        assert "差异 1 项" in mail.get_content() and "tax" in mail.get_content()
        assert "wages：申报 1000.00 元，核对 1800.00 元" in mail.get_content()

        async def sent() -> bool:
            found = (
                await notifications.get(
                    f"/v1/messages?cause={event.id}", headers=bearer(token("notifications:read"))
                )
            ).json()
            return {m["channel"]: m["status"] for m in found} == {
                "inbox": "delivered",
                "email": "sent",
            }

        await eventually(sent)
        await asyncio.sleep(0)


class TestMailSandbox:
    async def test_the_sms_sandbox_runs_the_embedded_mail_server_and_lists_its_mail(self) -> None:
        from services.notifications.channels.email import SmtpMailer

        smtp_port = free_port()
        settings = SmsSandboxSettings(smtp_port=smtp_port)
        with serving(create_sms_gateway(settings)) as url:
            mailer = SmtpMailer("127.0.0.1", smtp_port, sender="bangfu@localhost")
            await mailer.send(
                to="county_office-411302@bangfu.local",
                subject="逾期未走访：档案号 hh-1",
                body="请督促落实。",
                message_id="m-1",
            )
            async with httpx.AsyncClient(base_url=url) as client:
                mails = (await client.get("/v1/mails")).json()
        assert mails == [
            {
                "from": "bangfu@localhost",
                "to": ["county_office-411302@bangfu.local"],
                "subject": "逾期未走访：档案号 hh-1",
                "body": "请督促落实。\n",
            }
        ]


class TestSendFailures:
    """A message that cannot be sent fails alone, after bounded attempts; the batch goes on."""

    async def test_without_a_pii_token_the_sms_fails_after_its_attempts_and_the_mail_goes_out(
        self,
        channel_settings: NotificationsSettings,
        token: Callable[..., str],
        publish: Publish,
        registry_server: str,
        smtp: tuple[int, Mailbox],
        nats_url: str,
    ) -> None:
        # A client of the registry holding a token without pii:read only.
        service_token = token("registry:read", regions=["41"], client_id="service:notifications")
        settings = channel_settings.model_copy(update={"workers": False, "message_max_attempts": 3})
        nc = await nats.connect(nats_url)
        failed: list[dict[str, Any]] = []

        async def collect(message: Any) -> None:
            failed.append(json.loads(message.data)["data"])

        await nc.subscribe("bangfu.notifications.notification.failed.>", cb=collect)
        async with running(create_app(settings)) as client:
            household_id = await file_household(
                registry_server, token, phone="13912349999", serial=7
            )
            await entitlements(publish, household_id)
            await eventually(lambda: _count(sms_of(client, token, household_id), 1))
            await publish(
                "verification",
                "verification",
                "completed",
                household_id="hh-batch",
                data=SAMPLES["verification.verification.completed"],
            )
            await eventually(lambda: _count(mail_of(client, token, "hh-batch"), 1))
            url, schema = settings.database
            database = Database(url, schema=schema)
            dispatcher = Dispatcher.from_settings(
                database,
                settings,
                registry=lambda: RegistryClient(registry_server, token=service_token),
            )
            try:
                assert await dispatcher.run_once() == 2  # the SMS first, then the mail
                [mail] = await mail_of(client, token, "hh-batch")
                [sms] = await sms_of(client, token, household_id)
                assert mail["status"] == "sent" and len(smtp[1].mails) == 1
                assert sms["status"] == "queued" and sms["send_after"] > sms["created_at"]

                async def given_up() -> bool:
                    await dispatcher.run_once()
                    [sms] = await sms_of(client, token, household_id)
                    return bool(sms["status"] == "failed")

                await eventually(given_up)
                async with database.unit_of_work() as uow:
                    row = await store.get_message(uow.session, sms["id"])
            finally:
                await dispatcher.stop()
                await database.dispose()
            [sms] = await sms_of(client, token, household_id)
            # Published through the outbox, which the app's relay sends.
            await eventually(lambda: any(f["channel"] == "sms" for f in failed))
        await nc.close()
        assert row is not None and row["attempts"] == 3
        reason = "the service has no registry token with pii:read to read the phone number"
        assert sms["reason"] == reason
        [event] = [f for f in failed if f["channel"] == "sms"]
        assert event["message_id"] == sms["id"] and event["reason"] == reason

    async def test_an_expired_registry_token_is_renewed_and_the_sms_goes_out(
        self,
        channel_settings: NotificationsSettings,
        token: Callable[..., str],
        publish: Publish,
        registry_server: str,
    ) -> None:
        settings = channel_settings.model_copy(update={"workers": False})
        expired = token(
            "registry:read",
            "pii:read",
            client_id="service:notifications",
            ttl=timedelta(hours=1),
            now=datetime.now(UTC) - timedelta(hours=2),
        )
        made: list[RegistryClient] = []

        def registry() -> RegistryClient:
            """The first client holds a token that has expired; renewal issues a fresh one."""
            if made:
                made.append(RegistryClient.from_settings(settings))
            else:
                made.append(RegistryClient(registry_server, token=expired, pii_token=expired))
            return made[-1]

        async with running(create_app(settings)) as client:
            household_id = await file_household(
                registry_server, token, phone="13912348888", serial=8
            )
            await entitlements(publish, household_id)
            await eventually(lambda: _count(sms_of(client, token, household_id), 1))
            url, schema = settings.database
            database = Database(url, schema=schema)
            dispatcher = Dispatcher.from_settings(database, settings, registry=registry)
            try:
                assert await dispatcher.run_once() == 1
            finally:
                await dispatcher.stop()
                await database.dispose()
            [sms] = await sms_of(client, token, household_id)
        assert sms["status"] == "sent" and sms["reason"] is None
        assert len(made) == 2


async def mail_of(
    client: httpx.AsyncClient, token: Callable[..., str], household_id: str
) -> list[dict[str, Any]]:
    response = await client.get(
        f"/v1/messages?household_id={household_id}", headers=bearer(token("notifications:read"))
    )
    return [m for m in response.json() if m["channel"] == "email"]
