"""Events on NATS become messages: inboxes, referrals to departments' webhooks, status by cause."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import jsonschema
import nats

from tests.helpers import bearer
from tests.services.notifications.conftest import SECRET, Publish, Receiver, eventually
from tests.services.notifications.samples import MEASURES, SAMPLES


async def _messages(client: httpx.AsyncClient, token: Callable[..., str], cause: str) -> list[Any]:
    response = await client.get(
        f"/v1/messages?cause={cause}", headers=bearer(token("notifications:read"))
    )
    assert response.status_code == 200, response.text
    found: list[Any] = response.json()
    return found


class TestInbox:
    async def test_an_assigned_helper_finds_the_message_in_the_inbox_and_reads_it(
        self, notifications: httpx.AsyncClient, token: Callable[..., str], publish: Publish
    ) -> None:
        event = await publish(
            "registry",
            "household",
            "helper_assigned",
            household_id="hh-1",
            data=SAMPLES["registry.household.helper_assigned"],
        )
        helper = bearer(token(client_id="helper:H001"))

        async def inbox() -> dict[str, Any]:
            body: dict[str, Any] = (await notifications.get("/v1/inbox", headers=helper)).json()
            return body

        await eventually(lambda: _has_items(inbox()))
        box = await inbox()
        assert box["unread"] == 1
        [item] = box["items"]
        assert item["cause"] == event.id and item["status"] == "delivered"
        assert "hh-1" in item["body"] and "南阳市总工会" in item["body"]
        read = await notifications.post(f"/v1/inbox/{item['id']}/read", headers=helper)
        assert read.json()["read_at"] is not None
        assert (await inbox())["unread"] == 0
        await notifications.post(f"/v1/inbox/{item['id']}/unread", headers=helper)
        assert (await inbox())["unread"] == 1
        # Someone else's inbox is empty, and they cannot mark this message.
        other = bearer(token(client_id="helper:H002"))
        assert (await notifications.get("/v1/inbox", headers=other)).json()["items"] == []
        refused = await notifications.post(f"/v1/inbox/{item['id']}/read", headers=other)
        assert refused.status_code == 404

    async def test_each_inbox_message_is_announced_as_notification_sent(
        self,
        notifications: httpx.AsyncClient,
        token: Callable[..., str],
        publish: Publish,
        nats_url: str,
    ) -> None:
        nc = await nats.connect(nats_url)
        seen: list[dict[str, Any]] = []

        async def collect(message: Any) -> None:
            seen.append(json.loads(message.data))

        await nc.subscribe("bangfu.notifications.notification.sent.>", cb=collect)
        event = await publish(
            "registry",
            "household",
            "noticed",
            household_id="hh-2",
            data=SAMPLES["registry.household.noticed"],
        )
        await eventually(lambda: bool(seen))
        await nc.close()
        schemas = (await notifications.get("/v1/events/schemas")).json()
        assert set(schemas) == {
            f"cn.bangfu.notifications.notification.{name}.v1"
            for name in ("sent", "failed", "referral")
        }
        jsonschema.validate(seen[0]["data"], schemas[seen[0]["type"]])
        assert seen[0]["type"] == "cn.bangfu.notifications.notification.sent.v1"
        assert seen[0]["data"]["cause"] == event.id
        assert seen[0]["data"]["recipient"] == "411302"
        assert seen[0]["data"]["template"] == "notice_started"


class TestReferrals:
    async def test_entitlements_refer_each_department_and_report_each_delivery_status(
        self,
        notifications: httpx.AsyncClient,
        token: Callable[..., str],
        publish: Publish,
        receiver: Receiver,
    ) -> None:
        response = await notifications.post(
            "/v1/subscriptions",
            json={
                "url": receiver.url,
                "secret": SECRET,
                "event_types": ["cn.bangfu.notifications.notification.referral.v1"],
                "department": "renshe",
            },
            headers=bearer(token("notifications:admin", client_id="renshe-system")),
        )
        assert response.status_code == 201
        event = await publish(
            "benefits",
            "entitlements",
            "determined",
            household_id="hh-3",
            data={"measures": MEASURES},
        )

        async def settled() -> bool:
            found = await _messages(notifications, token, event.id)
            webhooks = [m for m in found if m["channel"] == "webhook"]
            return (
                len(webhooks) == 6
                and all(m["status"] != "queued" for m in webhooks)
                and any(m["status"] == "delivered" for m in webhooks)
            )

        await eventually(settled)
        found = await _messages(notifications, token, event.id)
        webhook = {m["recipient"]: m for m in found if m["channel"] == "webhook"}
        assert webhook["department:renshe:411302"]["status"] == "delivered"
        assert webhook["department:yibao:411302"]["status"] == "failed"
        assert "no webhook subscription" in webhook["department:yibao:411302"]["reason"]

        async def counted() -> bool:  # the outcomes reach the metrics the dashboard reads
            text = (await notifications.get("/metrics")).text
            return (
                'bangfu_notification_sent_total{channel="webhook"}' in text
                and 'bangfu_notification_failures_total{channel="webhook",reason="the '
                'department has no webhook subscription"}'
                in text
            )

        await eventually(counted)
        [referral] = receiver.events()
        assert referral.type == "cn.bangfu.notifications.notification.referral.v1"
        schemas = (await notifications.get("/v1/events/schemas")).json()
        jsonschema.validate(referral.data, schemas[referral.type])
        assert referral.data["department"] == "renshe"
        assert [m["code"] for m in referral.data["measures"]] == ["job_training", "public_job"]
        inboxes = {m["recipient"] for m in found if m["channel"] == "inbox"}
        assert "department:jiaoyu:411302" in inboxes and len(inboxes) == 6
        [sms] = [m for m in found if m["channel"] == "sms"]
        assert sms["recipient"] == "household:hh-3" and "7 项" in sms["body"]

    async def test_messages_outside_the_callers_regions_are_not_shown(
        self, notifications: httpx.AsyncClient, token: Callable[..., str], publish: Publish
    ) -> None:
        event = await publish(
            "benefits",
            "exit",
            "eligible",
            household_id="hh-4",
            data={"months_above": 6, "required": 6, "latest_month": "2026-10"},
        )
        await eventually(lambda: _nonempty(_messages(notifications, token, event.id)))
        elsewhere = await notifications.get(
            f"/v1/messages?cause={event.id}",
            headers=bearer(token("notifications:read", regions=["42"])),
        )
        assert elsewhere.json() == []
        needs_a_filter = await notifications.get(
            "/v1/messages", headers=bearer(token("notifications:read"))
        )
        assert needs_a_filter.status_code == 422


async def _has_items(box: Any) -> bool:
    return bool((await box)["items"])


async def _nonempty(items: Any) -> bool:
    return bool(await items)
