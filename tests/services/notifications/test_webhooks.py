"""Webhook subscriptions over REST; signed, retried, ordered deliveries to a real receiver."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx

from services.notifications import store, webhooks
from services.notifications.delivery import DeliveryWorker
from services.notifications.settings import NotificationsSettings
from shared.auth import Principal
from shared.db import Database
from shared.events.envelope import CloudEvent, new_event
from tests.conftest import running
from tests.helpers import bearer
from tests.services.notifications.conftest import SECRET, Publish, Receiver, eventually

ADMIN = "notifications:admin"
ENROLLED = "cn.bangfu.registry.household.enrolled.v1"


async def _subscribe(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    receiver: Receiver,
    **fields: object,
) -> dict[str, object]:
    body = {
        "url": receiver.url,
        "secret": SECRET,
        "event_types": ["cn.bangfu.registry.household.*"],
    }
    body.update(fields)
    response = await client.post("/v1/subscriptions", json=body, headers=bearer(token(ADMIN)))
    assert response.status_code == 201, response.text
    created: dict[str, object] = response.json()
    return created


def _per_household(events: list[CloudEvent]) -> dict[str, list[int]]:
    order: dict[str, list[int]] = defaultdict(list)
    for event in events:
        order[event.subject].append(event.sequence)
    return dict(order)


class TestSubscriptions:
    async def test_a_subscription_is_registered_listed_paused_resumed_and_deleted(
        self, notifications: httpx.AsyncClient, token: Callable[..., str], receiver: Receiver
    ) -> None:
        created = await _subscribe(notifications, token, receiver, regions=["4113"])
        auth = bearer(token(ADMIN))
        assert "secret" not in created
        assert created["regions"] == ["4113"] and created["status"] == "active"
        listed = (await notifications.get("/v1/subscriptions", headers=auth)).json()
        assert [s["id"] for s in listed] == [created["id"]]
        path = f"/v1/subscriptions/{created['id']}"
        assert (await notifications.post(f"{path}/pause", headers=auth)).json()[
            "status"
        ] == "paused"
        assert (await notifications.post(f"{path}/resume", headers=auth)).json()[
            "status"
        ] == "active"
        assert (await notifications.delete(path, headers=auth)).status_code == 204
        assert (await notifications.get(path, headers=auth)).status_code == 404

    async def test_a_retried_registration_with_its_idempotency_key_registers_once(
        self, notifications: httpx.AsyncClient, token: Callable[..., str], receiver: Receiver
    ) -> None:
        body = {"url": receiver.url, "secret": SECRET, "event_types": ["*"]}
        headers = {**bearer(token(ADMIN)), "Idempotency-Key": "sub-1"}
        first = await notifications.post("/v1/subscriptions", json=body, headers=headers)
        again = await notifications.post("/v1/subscriptions", json=body, headers=headers)
        other_secret = await notifications.post(
            "/v1/subscriptions", json={**body, "secret": SECRET + "x"}, headers=headers
        )
        assert first.status_code == again.status_code == 201
        assert again.json() == first.json()
        assert first.headers["location"] == f"/v1/subscriptions/{first.json()['id']}"
        assert other_secret.status_code == 422
        listed = (await notifications.get("/v1/subscriptions", headers=headers)).json()
        assert len(listed) == 1

    async def test_another_client_cannot_see_a_subscription(
        self, notifications: httpx.AsyncClient, token: Callable[..., str], receiver: Receiver
    ) -> None:
        created = await _subscribe(notifications, token, receiver)
        other = bearer(token(ADMIN, client_id="someone-else"))
        response = await notifications.get(f"/v1/subscriptions/{created['id']}", headers=other)
        assert response.status_code == 404
        assert (await notifications.get("/v1/subscriptions", headers=other)).json() == []

    async def test_a_region_outside_the_token_is_refused(
        self, notifications: httpx.AsyncClient, token: Callable[..., str], receiver: Receiver
    ) -> None:
        response = await notifications.post(
            "/v1/subscriptions",
            json={"url": receiver.url, "secret": SECRET, "event_types": ["*"], "regions": ["42"]},
            headers=bearer(token(ADMIN, regions=["41"])),
        )
        assert response.status_code == 403
        assert response.json()["type"].endswith("/region-not-allowed")

    async def test_registering_needs_the_admin_scope_and_a_long_secret(
        self, notifications: httpx.AsyncClient, token: Callable[..., str], receiver: Receiver
    ) -> None:
        body = {"url": receiver.url, "secret": SECRET, "event_types": ["*"]}
        weak = await notifications.post(
            "/v1/subscriptions", json=body, headers=bearer(token("registry:read"))
        )
        short = await notifications.post(
            "/v1/subscriptions", json={**body, "secret": "short"}, headers=bearer(token(ADMIN))
        )
        assert weak.status_code == 403
        assert short.status_code == 422
        assert short.json()["errors"][0]["field"] == "secret"


class TestDelivery:
    async def test_deliveries_are_signed_filtered_and_in_order_per_household(
        self,
        notifications: httpx.AsyncClient,
        token: Callable[..., str],
        receiver: Receiver,
        publish: Publish,
    ) -> None:
        await _subscribe(
            notifications,
            token,
            receiver,
            regions=["4113"],
            event_types=["cn.bangfu.registry.household.enrolled.v1", "*.visit_recorded.v1"],
        )
        sent = []
        for sequence in range(1, 4):
            for household in ("h-a", "h-b"):
                sent.append(
                    await publish(
                        "registry",
                        "household",
                        "visit_recorded" if sequence > 1 else "enrolled",
                        household_id=household,
                        sequence=sequence,
                    )
                )
        # Filtered out: another region, another type.
        await publish("registry", "household", "enrolled", household_id="h-c", region="420102")
        await publish("registry", "household", "changed", household_id="h-a", sequence=9)
        await eventually(lambda: len(receiver.events()) >= len(sent))
        await asyncio.sleep(0.3)  # anything extra would have arrived by now
        events = receiver.events()
        assert receiver.bad_signatures == 0
        assert sorted(e.id for e in events) == sorted(e.id for e in sent)
        assert _per_household(events) == {"h-a": [1, 2, 3], "h-b": [1, 2, 3]}
        assert {r["type"] for r in receiver.received} == {ENROLLED, sent[2].type}
        # Sent as the URL names its host, as ours, and with no receiver's cookie sent back.
        assert {r["host"] for r in receiver.received} == {httpx.URL(receiver.url).netloc.decode()}
        assert {r["user_agent"] for r in receiver.received} == {"Bangfu-Webhooks/1"}
        assert {r["cookie"] for r in receiver.received} == {None}

    async def test_a_receiver_down_for_a_while_gets_every_delivery_once_and_in_order(
        self,
        notifications: httpx.AsyncClient,
        token: Callable[..., str],
        receiver: Receiver,
        publish: Publish,
    ) -> None:
        created = await _subscribe(notifications, token, receiver)
        receiver.down = True
        sent = [
            await publish("registry", "household", "changed", household_id=f"h-{i % 3}", sequence=i)
            for i in range(12)
        ]
        await eventually(lambda: receiver.refused >= 6)
        receiver.down = False
        await eventually(lambda: len(receiver.events()) >= len(sent), timeout=30)
        await asyncio.sleep(0.5)
        events = receiver.events()
        assert len(events) == len(sent) and len({e.id for e in events}) == len(sent)
        assert _per_household(events) == {
            f"h-{h}": [i for i in range(12) if i % 3 == h] for h in range(3)
        }
        log = (
            await notifications.get(
                f"/v1/subscriptions/{created['id']}/deliveries", headers=bearer(token(ADMIN))
            )
        ).json()["items"]
        assert {d["status"] for d in log} == {"delivered"}
        retried = [d for d in log if d["attempts"] > 1]
        assert retried, "the receiver was down: some deliveries needed more than one attempt"
        attempts = (
            await notifications.get(
                f"/v1/subscriptions/{created['id']}/deliveries/{retried[0]['id']}/attempts",
                headers=bearer(token(ADMIN)),
            )
        ).json()
        assert attempts[0]["status_code"] == 503 and attempts[-1]["status_code"] == 204

    async def test_a_paused_subscription_queues_and_sends_on_resume(
        self,
        notifications: httpx.AsyncClient,
        token: Callable[..., str],
        receiver: Receiver,
        publish: Publish,
    ) -> None:
        created = await _subscribe(notifications, token, receiver)
        path, auth = f"/v1/subscriptions/{created['id']}", bearer(token(ADMIN))
        await notifications.post(f"{path}/pause", headers=auth)
        event = await publish("registry", "household", "changed", household_id="h-p")

        async def queued() -> bool:
            items = (await notifications.get(f"{path}/deliveries", headers=auth)).json()["items"]
            return [d["status"] for d in items] == ["pending"]

        await eventually(queued)
        await asyncio.sleep(0.3)
        assert receiver.events() == []
        await notifications.post(f"{path}/resume", headers=auth)
        await eventually(lambda: [e.id for e in receiver.events()] == [event.id])


class TestDeadLetters:
    async def test_a_delivery_failing_past_the_retry_period_is_dead_and_the_queue_moves_on(
        self,
        notifications_settings: NotificationsSettings,
        token: Callable[..., str],
        receiver: Receiver,
        publish: Publish,
    ) -> None:
        from services.notifications.app import create_app

        settings = notifications_settings.model_copy(update={"webhook_retry_seconds": 0.5})
        async with running(create_app(settings)) as client:
            created = await _subscribe(client, token, receiver)
            path, auth = f"/v1/subscriptions/{created['id']}", bearer(token(ADMIN))
            receiver.down = True
            first = await publish("registry", "household", "changed", household_id="h-d")

            async def dead() -> list[dict[str, object]]:
                response = await client.get(f"{path}/deliveries?status=dead", headers=auth)
                items: list[dict[str, object]] = response.json()["items"]
                return items

            await eventually(lambda: _nonempty(dead()))
            letters = await dead()
            assert [d["event_id"] for d in letters] == [first.id]
            assert letters[0]["last_error"] == "HTTP 503"
            assert int(str(letters[0]["attempts"])) >= 2
            receiver.down = False
            second = await publish(
                "registry", "household", "changed", household_id="h-d", sequence=2
            )
            await eventually(lambda: [e.id for e in receiver.events()] == [second.id])


async def _nonempty(items: object) -> bool:
    return bool(await items)  # type: ignore[misc]


class TestReplay:
    async def test_replaying_a_window_delivers_its_events_again_in_order(
        self,
        notifications: httpx.AsyncClient,
        token: Callable[..., str],
        receiver: Receiver,
        publish: Publish,
    ) -> None:
        created = await _subscribe(notifications, token, receiver)
        sent = [
            await publish("registry", "household", "changed", household_id="h-r", sequence=i)
            for i in range(1, 4)
        ]
        await eventually(lambda: len(receiver.events()) == 3)
        path, auth = f"/v1/subscriptions/{created['id']}", bearer(token(ADMIN))
        window = {
            "since": (sent[1].time - timedelta(microseconds=1)).isoformat(),
            "until": (datetime.now(UTC) + timedelta(seconds=1)).isoformat(),
        }
        response = await notifications.post(f"{path}/replay", json=window, headers=auth)
        assert response.status_code == 202 and response.json() == {"queued": 2}
        await eventually(lambda: len(receiver.events()) == 5)
        assert [e.sequence for e in receiver.events()] == [1, 2, 3, 2, 3]
        log = (await notifications.get(f"{path}/deliveries", headers=auth)).json()["items"]
        assert [d["replay_of"] is not None for d in log] == [False, False, False, True, True]

    async def test_a_replay_also_sends_events_from_before_the_subscription_existed(
        self,
        notifications: httpx.AsyncClient,
        token: Callable[..., str],
        receiver: Receiver,
        publish: Publish,
    ) -> None:
        early = [
            await publish("registry", "household", "changed", household_id="h-e", sequence=i)
            for i in (1, 2)
        ]
        elsewhere = await publish(
            "registry", "household", "changed", household_id="h-f", region="420102"
        )
        await asyncio.sleep(1)  # the fan-out consumer has long seen them, with no subscription
        created = await _subscribe(notifications, token, receiver, regions=["41"])
        later = await publish("registry", "household", "changed", household_id="h-e", sequence=3)
        await eventually(lambda: [e.id for e in receiver.events()] == [later.id])
        window = {
            "since": (early[0].time - timedelta(seconds=1)).isoformat(),
            "until": (datetime.now(UTC) + timedelta(seconds=1)).isoformat(),
        }
        response = await notifications.post(
            f"/v1/subscriptions/{created['id']}/replay", json=window, headers=bearer(token(ADMIN))
        )
        assert response.json() == {"queued": 3}
        await eventually(lambda: len(receiver.events()) == 4)
        assert [e.id for e in receiver.events()] == [later.id, early[0].id, early[1].id, later.id]
        assert elsewhere.id not in {e.id for e in receiver.events()}


class TestCrashedWorker:
    async def test_a_delivery_leased_by_a_worker_that_died_is_sent_once_the_lease_ends(
        self, settings: NotificationsSettings, db: Database, receiver: Receiver
    ) -> None:
        keyring = settings.keyring()
        principal = Principal("dept", frozenset({ADMIN}), ("41",))
        now = datetime.now(UTC)
        event = new_event(
            service="registry",
            aggregate="household",
            name="changed",
            subject="hh-x",
            region="411302",
            sequence=1,
            data={"household_id": "hh-x"},
        )
        async with db.unit_of_work() as uow:
            await webhooks.register_subscription(
                uow,
                principal=principal,
                keyring=keyring,
                destinations=settings.destination_policy(),
                url=receiver.url,
                secret=SECRET,
                event_types=["*"],
                regions=None,
                department=None,
                now=now,
            )
            await webhooks.fan_out(uow, event, now=now)
            await uow.commit()
        async with db.unit_of_work() as uow:  # a worker claims it, then dies before posting
            claimed = await store.claim_deliveries(
                uow.session, now=now, lease_until=now + timedelta(seconds=1.5), limit=10
            )
            await uow.commit()
        assert len(claimed) == 1
        worker = DeliveryWorker(db, settings, keyring)
        try:
            assert await worker.run_once() == 0  # still leased (with room for a slow machine)
            await asyncio.sleep(1.6)
            assert await worker.run_once() == 1
            assert await worker.run_once() == 0
        finally:
            await worker.stop()
        assert [e.id for e in receiver.events()] == [event.id]


class TestPoisonSubscription:
    async def test_a_subscription_whose_secret_cannot_be_read_fails_alone(
        self,
        notifications_settings: NotificationsSettings,
        notifications: httpx.AsyncClient,
        token: Callable[..., str],
        receiver: Receiver,
        publish: Publish,
    ) -> None:
        url, schema = notifications_settings.database
        database = Database(url, schema=schema)
        now = datetime.now(UTC)
        async with database.unit_of_work() as uow:  # encrypted with a key since dropped
            await store.insert_subscription(
                uow.session,
                {
                    "id": "unreadable",
                    "owner": "test-client",
                    "url": receiver.url,
                    "secret_cipher": "k0:not-a-ciphertext",
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
        await _subscribe(notifications, token, receiver)
        event = await publish("registry", "household", "changed", household_id="h-poison")
        await eventually(lambda: [e.id for e in receiver.events()] == [event.id])
        auth = bearer(token(ADMIN))
        path = "/v1/subscriptions/unreadable/deliveries"

        async def attempted() -> bool:
            items = (await notifications.get(path, headers=auth)).json()["items"]
            return bool(items) and items[0]["attempts"] >= 1

        await eventually(attempted)
        [delivery] = (await notifications.get(path, headers=auth)).json()["items"]
        assert delivery["status"] == "pending" and delivery["last_status_code"] is None
        assert delivery["last_error"]
