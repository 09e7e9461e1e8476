"""Benefits driven by events over real NATS: the registry's households (fetched over REST from
the real registry) and verification reports; a redelivered event doubles nothing."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from datetime import date
from typing import Any
from urllib.parse import quote

import httpx
import nats
import pytest
from sqlalchemy import select

from services.benefits import store
from services.benefits.app import create_app
from services.benefits.consumers import subscriptions
from services.benefits.domain.parameters import DEFAULT_DIRECTORY, load_book
from services.benefits.inputs import from_registry
from services.benefits.service import Engine
from services.benefits.settings import BenefitsSettings
from shared.db import Database
from shared.events.envelope import CloudEvent, new_event
from tests.conftest import running
from tests.helpers import bearer, eventually, household_event, identity_number
from tests.services.registry.test_api import file_household

READ = "benefits:read"


@pytest.fixture
async def following(
    benefits_settings: BenefitsSettings, registry_server: str
) -> AsyncIterator[httpx.AsyncClient]:
    """Benefits reading households from the real registry served over HTTP."""
    settings = benefits_settings.model_copy(
        update={"follow_registry": True, "registry_url": registry_server}
    )
    async with running(create_app(settings)) as client:
        yield client


async def publish(nats_url: str, *events: CloudEvent) -> None:
    """Publish as the producers' outbox relays do (no Nats-Msg-Id, so a repeat is redelivered)."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    for event in events:
        await js.publish(event.nats_subject, event.to_json())
    await nc.close()


def income(household_id: str, month: str, fen: int, sequence: int) -> CloudEvent:
    return new_event(
        service="registry",
        aggregate="household",
        name="income_recorded",
        subject=household_id,
        region="411302",
        sequence=sequence,
        data={"household_id": household_id, "month": month, "income_fen": fen, "member_count": 1},
    )


async def collect(nats_url: str, subject: str) -> tuple[Any, list[dict[str, Any]]]:
    nc = await nats.connect(nats_url)
    seen: list[dict[str, Any]] = []

    async def on(message: Any) -> None:
        seen.append(CloudEvent.from_json(message.data).data)

    await nc.subscribe(subject, cb=on)
    return nc, seen


class TestRegistryHouseholds:
    async def test_a_filed_household_gets_its_card_and_the_registry_shows_it(
        self,
        following: httpx.AsyncClient,
        registry_server: str,
        token: Callable[..., str],
    ) -> None:
        async with httpx.AsyncClient(base_url=registry_server, timeout=10) as registry:
            created = await file_household(registry, token)
            household_id = created.json()["id"]
            reader = bearer(token("registry:read"))

            async def annotated() -> Any:
                file = await registry.get(f"/v1/households/{household_id}", headers=reader)
                return file.json()["entitlements"]

            card = await eventually(annotated)
        # One member, no declared income, Nanyang's 630元: 低保金 630元 a month.
        assert card["household_id"] == household_id
        assert card["monthly_fen"] == 63000
        assert card["categories"] == ["dibao"]
        held = await following.get(
            f"/v1/households/{household_id}/card", headers=bearer(token(READ))
        )
        assert held.json()["measures"][0]["amount_fen"] == 63000

    async def test_a_result_attached_to_the_file_is_not_read_again(
        self,
        following: httpx.AsyncClient,
        benefits_settings: BenefitsSettings,
        registry_server: str,
        token: Callable[..., str],
        nats_url: str,
    ) -> None:
        """The card benefits attaches to the registry's file comes back as `household.changed`
        naming only `entitlements`: nothing of the household changed, so benefits neither
        reads the file again nor decides its card a second time (before: two decisions)."""
        async with httpx.AsyncClient(base_url=registry_server, timeout=10) as registry:
            household_id = (await file_household(registry, token)).json()["id"]
            reader = bearer(token("registry:read"))

            async def annotated() -> Any:
                file = await registry.get(f"/v1/households/{household_id}", headers=reader)
                return file.json()["entitlements"]

            await eventually(annotated)
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        published = await js.stream_info("REGISTRY")  # the attachment's event among them

        async def handled_everything() -> bool:
            info = await js.consumer_info("REGISTRY", "benefits-household")
            return bool(info.ack_floor.stream_seq >= published.state.last_seq)

        await eventually(handled_everything)
        await nc.close()
        url, schema = benefits_settings.database
        db = Database(url, schema=schema)
        async with db.unit_of_work() as uow:
            decisions = (
                await uow.session.execute(
                    select(store.decision.c.kind).where(
                        store.decision.c.household_id == household_id
                    )
                )
            ).scalars()
            kinds = sorted(decisions)
        await db.dispose()
        assert kinds == ["card"]

    async def test_a_file_older_than_the_service_is_fetched_on_first_request(
        self,
        benefits_settings: BenefitsSettings,
        registry_server: str,
        token: Callable[..., str],
        nats_url: str,
    ) -> None:
        async with httpx.AsyncClient(base_url=registry_server, timeout=10) as registry:
            household_id = (await file_household(registry, token)).json()["id"]
        # Its events are gone (retention, or filed before benefits existed): only REST remains.
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        await eventually(lambda: js.stream_info("REGISTRY"))
        await asyncio.sleep(1)  # let the registry's relay publish what it has
        await js.purge_stream("REGISTRY")
        await asyncio.sleep(0.5)
        # Nothing published late: the card below can only come from the request.
        assert (await js.stream_info("REGISTRY")).state.messages == 0
        await nc.close()
        settings = benefits_settings.model_copy(
            update={"follow_registry": True, "registry_url": registry_server}
        )
        async with running(create_app(settings)) as benefits:
            headers = bearer(token(READ))
            card = await benefits.get(f"/v1/households/{household_id}/card", headers=headers)
            assert card.status_code == 200, card.text
            assert card.json()["monthly_fen"] == 63000
            unknown = await benefits.get("/v1/households/no-such-file/card", headers=headers)
            assert unknown.status_code == 404


class TestIncomesAndExit:
    async def test_six_months_above_emit_exit_eligible_once_even_when_redelivered(
        self,
        benefits: httpx.AsyncClient,
        nats_url: str,
        token: Callable[..., str],
    ) -> None:
        nc, exits = await collect(nats_url, "bangfu.benefits.exit.eligible.>")
        months = [income("h-exit", f"2026-{m:02d}", 70000, m) for m in range(1, 7)]
        await publish(nats_url, *months[:5], months[4])  # the fifth twice: a redelivery
        await publish(nats_url, months[5], months[5])
        await eventually(lambda: asyncio.sleep(0, result=len(exits) >= 1))
        await asyncio.sleep(1)  # time for any wrong second event to arrive
        await nc.close()
        assert exits == [
            {"household_id": "h-exit", "months_above": 6, "required": 6, "latest_month": "2026-06"}
        ]


class TestVerification:
    async def test_a_verified_income_wins_over_the_declared_one(
        self,
        benefits: httpx.AsyncClient,
        nats_url: str,
        token: Callable[..., str],
    ) -> None:
        headers = bearer(token(READ, "benefits:admin"))
        put = await benefits.put(
            "/v1/households/h-v",
            json={
                "household": {
                    "region": "411302",
                    "declared_income_fen": 0,
                    "members": [{"birth_date": "1980-01-01"}],
                }
            },
            headers=headers,
        )
        assert put.json()["income_source"] == "declared"
        report = new_event(
            service="verification",
            aggregate="verification",
            name="completed",
            subject="v-1",
            region="411302",
            sequence=1,
            data={
                "household_id": "h-v",
                "report_version": 2,
                "per_capita_income_fen": 50000,
                "asset_verdicts": {},
                "discrepancies": [],
                "unavailable_departments": [],
            },
        )
        nc, changed = await collect(nats_url, "bangfu.benefits.entitlements.changed.>")
        await publish(nats_url, report, report)
        await eventually(lambda: asyncio.sleep(0, result=bool(changed)))
        await asyncio.sleep(0.5)
        await nc.close()
        assert len(changed) == 1
        assert (changed[0]["income_source"], changed[0]["monthly_fen"]) == ("verified", 13000)
        card = await benefits.get("/v1/households/h-v/card", headers=headers)
        assert (card.json()["income_source"], card.json()["report_version"]) == ("verified", 2)


class TestCatchUp:
    async def test_a_backlog_filed_while_stopped_is_held_once_each_read_in_batches(
        self,
        benefits_settings: BenefitsSettings,
        registry_server: str,
        token: Callable[..., str],
        nats_url: str,
    ) -> None:
        """Households filed while benefits was stopped (one declared and changed after filing,
        so that its events follow one another in the backlog) are each held once, with the
        inputs their registry file gives, read through the batch read, never one by one."""
        count = 12
        write = bearer(token("registry:write", "registry:read"))
        async with httpx.AsyncClient(base_url=registry_server, timeout=30) as registry:
            filed = [
                (
                    await file_household(
                        registry, token, head_number=identity_number(serial=700 + n)
                    )
                ).json()
                for n in range(count)
            ]
            ids = [f["id"] for f in filed]
            posted = await registry.post(
                f"/v1/households/{ids[0]}/declarations",
                json={
                    "items": [
                        {
                            "member_id": filed[0]["members"][0]["id"],
                            "kind": "income",
                            "item": "wages",
                            "month": "2026-10",
                            "amount_fen": 20000,
                        }
                    ]
                },
                headers={**write, "If-Match": '"1"'},
            )
            assert posted.status_code == 201, posted.text
            changed = await registry.patch(
                f"/v1/households/{ids[0]}",
                json={"category": "dibao_edge"},
                headers={**write, "If-Match": posted.headers["etag"]},
            )
            assert changed.status_code == 200, changed.text
            nc = await nats.connect(nats_url)
            js = nc.jetstream()
            await eventually(lambda: _stream_holds(js, count + 2))
            await nc.close()
            on_determined, determined = await collect(
                nats_url, "bangfu.benefits.entitlements.determined.>"
            )
            on_changed, moved = await collect(nats_url, "bangfu.benefits.entitlements.changed.>")
            settings = benefits_settings.model_copy(
                update={"follow_registry": True, "registry_url": registry_server}
            )
            async with running(create_app(settings)):
                await eventually(lambda: asyncio.sleep(0, result=len(determined) >= count))
                await asyncio.sleep(1)  # time for a wrong second card to arrive
            await on_determined.close()
            await on_changed.close()
            assert sorted(d["household_id"] for d in determined) == sorted(ids)
            assert moved == []
            pii = {
                **bearer(token("registry:read", "pii:read")),
                "Bangfu-Purpose": quote("核对"),
            }
            metrics = (await registry.get("/metrics")).text
            expected = {}
            for household_id in ids:
                file = await registry.get(f"/v1/households/{household_id}", headers=pii)
                items = await registry.get(
                    f"/v1/households/{household_id}/declarations", headers=pii
                )
                expected[household_id] = from_registry(
                    file.json(), items.json(), on=date.today()
                ).model_dump(mode="json")
        url, schema = settings.database
        db = Database(url, schema=schema)
        async with db.unit_of_work() as uow:
            held = {h: (await store.get_household(uow.session, h)) for h in ids}
        await db.dispose()
        assert {h: row["facts"] if row else None for h, row in held.items()} == expected
        assert expected[ids[0]]["declared_income_fen"] == 20000
        batch_reads = _requests(metrics, "POST", "/v1/households:batch-get")
        single_reads = _requests(metrics, "GET", "/v1/households/{household_id}")
        # A fetch may bring one message alone (handled on its own): far fewer reads than files.
        assert batch_reads >= 1
        assert batch_reads + single_reads <= count // 3, (batch_reads, single_reads)


def _requests(metrics: str, method: str, route: str) -> int:
    """The registry's count of 200 answers to `method route`, from its /metrics text."""
    labels = f'method="{method}",route="{route}",status="200"'
    found = re.search(rf"bangfu_http_requests_total\{{{re.escape(labels)}\}} ([0-9.]+)", metrics)
    return int(float(found.group(1))) if found else 0


async def _stream_holds(js: Any, count: int) -> bool:
    """Whether the REGISTRY stream has `count` events (the relay has published the backlog)."""
    try:
        return bool((await js.stream_info("REGISTRY")).state.messages >= count)
    except Exception:  # noqa: BLE001 - not created yet
        return False


@pytest.mark.parametrize("follow_registry", [True, False])
async def test_the_household_consumer_takes_in_only_the_events_it_acts_on(
    benefits_settings: BenefitsSettings, follow_registry: bool
) -> None:
    """Acted on: a month's income, and a change after which the file is read again (when
    benefits follows the registry). Left out: an exit, and another service's result
    attached (benefits' own card among them)."""
    settings = benefits_settings.model_copy(update={"follow_registry": follow_registry})
    (household,) = [
        s
        for s in subscriptions(settings, Engine(load_book(DEFAULT_DIRECTORY)))
        if s.name == "benefits-household"
    ]
    assert household.wanted is not None
    earned = income("h-1", "2026-11", 1000, 3)
    moved = household_event("changed", ["location", "verification"])
    joined = household_event("member_added")
    attached = household_event("changed", ["verification", "entitlements"])
    exited = household_event("exited")
    db = Database(settings.database_url, schema=settings.database_schema)
    try:
        async with db.unit_of_work() as uow:
            kept = await household.wanted([earned, moved, joined, attached, exited], uow)
    finally:
        await db.dispose()
    followed = {moved.id, joined.id} if follow_registry else set()
    assert kept == {earned.id} | followed
