"""After enrolment: members, helper, visits, declarations, incomes, lists, statistics, and the
results other services publish, through the real API, database and NATS."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import date, timedelta

import httpx
import nats
from nats.js.client import JetStreamContext

from shared.events.envelope import new_event
from shared.events.streams import ensure_stream
from tests.helpers import bearer, identity_number
from tests.services.registry.test_api import Walk, file_household

READ = ("registry:read",)


async def enrolled(
    registry: httpx.AsyncClient,
    token: Callable[..., str],
    *,
    serial: int = 123,
    region: str = "411302",
) -> Walk:
    created = await file_household(
        registry, token, region=region, head_number=identity_number(region=region, serial=serial)
    )
    walk = Walk(registry, token, created.json()["id"])
    await walk.step("community_review", "review:community")
    await walk.plan()
    await walk.step("street_review", "review:street")
    await walk.step("county_approve", "review:county")
    await walk.step("start_notice", "review:county")
    return walk


class TestMembersAndFollowUp:
    async def test_members_come_and_go_with_their_events_and_history(
        self, registry: httpx.AsyncClient, token: Callable[..., str], nats_url: str
    ) -> None:
        nc = await nats.connect(nats_url)
        sub = await nc.subscribe("bangfu.registry.household.*.41.13.02")
        created = (await file_household(registry, token)).json()
        url = f"/v1/households/{created['id']}"
        headers = bearer(token("registry:write"))
        added = await registry.post(
            f"{url}/members",
            headers={**headers, "If-Match": '"1"'},
            json={
                "name": "张小明",
                "relation": "child",
                "identity_number": identity_number(birth=date(2012, 3, 4), serial=77),
                "education_stage": "junior_high",
                "boarding": True,
            },
        )
        assert added.status_code == 201, added.text
        child = added.json()["members"][1]
        assert (child["birth_date"], child["birth_year"]) == (None, 2012)
        assert child["education_stage"] == "junior_high"
        head_id = added.json()["members"][0]["id"]
        refused = await registry.delete(
            f"{url}/members/{head_id}?reason=x", headers={**headers, "If-Match": '"2"'}
        )
        assert refused.status_code == 422
        removed = await registry.delete(
            f"{url}/members/{child['id']}?reason=迁出", headers={**headers, "If-Match": '"2"'}
        )
        assert removed.status_code == 200
        assert len(removed.json()["members"]) == 1
        names = [json.loads((await sub.next_msg(timeout=5)).data)["type"] for _ in range(3)][1:]
        await nc.close()
        assert names == [
            "cn.bangfu.registry.household.member_added.v1",
            "cn.bangfu.registry.household.member_removed.v1",
        ]
        history = (await registry.get(f"{url}/history", headers=bearer(token(*READ)))).json()
        assert [h["action"] for h in history] == ["apply", "member_added", "member_removed"]
        assert history[1]["changes"][0]["new"].startswith("张*明 411302***********")

    async def test_helper_visits_and_incomes_follow_an_enrolled_household(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        walk = await enrolled(registry, token)
        url = f"/v1/households/{walk.id}"
        write = bearer(token("registry:write"))
        early = await registry.put(
            f"{url}/incomes/2026-10", headers=write, json={"month": "2026-10", "income_fen": 120000}
        )
        assert early.status_code == 422  # not enrolled yet: still in 公示
        no_helper = await registry.post(
            f"{url}/visits",
            headers=write,
            json={"visited_on": date.today().isoformat(), "findings": "见面"},
        )
        assert no_helper.status_code == 422
        for helper in (
            {"id": "h-1", "name": "刘洋", "unit": "宛城区总工会", "phone": "13900001111"},
            {"id": "h-2", "name": "周静", "unit": "宛城区总工会", "reason": "原责任人调动"},
        ):
            assigned = await registry.put(f"{url}/helper", headers=write, json=helper)
            assert assigned.status_code == 200, assigned.text
        assert assigned.json()["helper"]["id"] == "h-2"
        assignments = (await registry.get(f"{url}/helpers", headers=bearer(token(*READ)))).json()
        assert [(a["helper_id"], a["ended_at"] is None) for a in assignments] == [
            ("h-1", False),
            ("h-2", True),
        ]
        future = await registry.post(
            f"{url}/visits",
            headers=write,
            json={"visited_on": (date.today() + timedelta(days=1)).isoformat(), "findings": "x"},
        )
        assert future.status_code == 422
        visited = await registry.post(
            f"{url}/visits",
            headers=write,
            json={
                "visited_on": date.today().isoformat(),
                "findings": "孩子学费已落实",
                "follow_up_needed": True,
            },
        )
        assert visited.status_code == 201
        assert visited.json()["last_visit_on"] == date.today().isoformat()

    async def test_a_stale_income_month_or_a_negative_amount_is_refused(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        walk = await enrolled(registry, token)
        url = f"/v1/households/{walk.id}"
        write = bearer(token("registry:write"))
        mismatch = await registry.put(
            f"{url}/incomes/2026-10", headers=write, json={"month": "2026-09", "income_fen": 1}
        )
        assert mismatch.status_code == 422
        negative = await registry.put(
            f"{url}/incomes/2026-10", headers=write, json={"month": "2026-10", "income_fen": -1}
        )
        assert negative.status_code == 422

    async def test_declarations_name_members_of_the_household(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        created = (await file_household(registry, token)).json()
        url = f"/v1/households/{created['id']}"
        member_id = created["members"][0]["id"]
        write = {**bearer(token("registry:write")), "If-Match": '"1"'}
        stranger = await registry.post(
            f"{url}/declarations",
            headers=write,
            json={
                "items": [
                    {
                        "member_id": "nobody",
                        "kind": "income",
                        "item": "wages",
                        "month": "2026-10",
                        "amount_fen": 150000,
                    }
                ]
            },
        )
        assert stranger.status_code == 422
        assert stranger.json()["errors"][0]["field"] == "items[0].member_id"
        declared = await registry.post(
            f"{url}/declarations",
            headers=write,
            json={
                "items": [
                    {
                        "member_id": member_id,
                        "kind": "income",
                        "item": "wages",
                        "month": "2026-10",
                        "amount_fen": 150000,
                    },
                    {
                        "member_id": member_id,
                        "kind": "asset",
                        "item": "deposits",
                        "amount_fen": 800000,
                    },
                ]
            },
        )
        assert declared.status_code == 201
        items = (await registry.get(f"{url}/declarations", headers=bearer(token(*READ)))).json()
        assert [(i["item"], i["amount_fen"]) for i in items] == [
            ("wages", 150000),
            ("deposits", 800000),
        ]


class TestLists:
    async def test_lists_filter_page_with_a_stable_cursor_and_stay_in_region(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        ids = []
        for serial in range(7):
            region = "411302" if serial % 2 == 0 else "411303"
            created = await file_household(
                registry,
                token,
                region=region,
                head_number=identity_number(region=region, serial=serial),
            )
            ids.append(created.json()["id"])
        await registry.patch(
            f"/v1/households/{ids[0]}",
            json={"causes": ["education"]},
            headers={**bearer(token("registry:write")), "If-Match": '"1"'},
        )
        reader = bearer(token(*READ))
        seen, cursor = [], None
        while True:
            page = (
                await registry.get(
                    "/v1/households",
                    headers=reader,
                    params={"limit": 3, **({"cursor": cursor} if cursor else {})},
                )
            ).json()
            seen += [item["id"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == ids
        only_302 = (
            await registry.get("/v1/households", headers=reader, params={"region": "411302"})
        ).json()["items"]
        assert [i["id"] for i in only_302] == ids[0::2]
        assert only_302[0]["head_identity_number"].startswith("411302***********")
        by_cause = (
            await registry.get("/v1/households", headers=reader, params={"cause": "education"})
        ).json()["items"]
        assert [i["id"] for i in by_cause] == [ids[0]]
        confined = bearer(token(*READ, regions=["411303"]))
        wide = (
            await registry.get("/v1/households", headers=confined, params={"region": "41"})
        ).json()["items"]
        assert [i["id"] for i in wide] == ids[1::2]

    async def test_statistics_count_by_region_status_category_and_measure_the_yearly_target(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        walk = await enrolled(registry, token)
        await file_household(registry, token, head_number=identity_number(serial=900))
        target = await registry.put(
            f"/v1/targets/4113/{date.today().year}",
            json={"share_percent": 50},
            headers=bearer(token("review:county")),
        )
        assert target.status_code == 200
        stats = (await registry.get("/v1/statistics", headers=bearer(token(*READ)))).json()
        assert {(c["status"], c["households"]) for c in stats["counts"]} == {
            ("publicly_noticed", 1),
            ("applied", 1),
        }
        assert stats["progress"] == []  # nobody enrolled yet
        assert walk.id


class TestResultsFromOtherServices:
    async def test_a_verification_report_and_a_measures_card_attach_to_the_file(
        self, registry: httpx.AsyncClient, token: Callable[..., str], nats_url: str
    ) -> None:
        created = (await file_household(registry, token)).json()
        nc = await nats.connect(nats_url)
        js: JetStreamContext = nc.jetstream()
        await ensure_stream(js, name="VERIFICATION", subjects=["bangfu.verification.>"])
        await ensure_stream(js, name="BENEFITS", subjects=["bangfu.benefits.>"])
        report = new_event(
            service="verification",
            aggregate="verification",
            name="completed",
            subject="v-1",
            region="411302",
            sequence=1,
            data={
                "household_id": created["id"],
                "report_version": 1,
                "per_capita_income_fen": 52000,
                "discrepancies": [
                    {
                        "member": "411302***********X",
                        "item": "wages",
                        "declared_fen": 0,
                        "verified_fen": 180000,
                    }
                ],
                "unavailable_departments": [],
            },
        )
        card = new_event(
            service="benefits",
            aggregate="entitlements",
            name="determined",
            subject=created["id"],
            region="411302",
            sequence=1,
            data={
                "household_id": created["id"],
                "measures": [{"measure": "低保金", "amount_fen": 22000}],
            },
        )
        # The report arrives twice (stored twice, past the duplicate window): handled once.
        for event, msg_id in ((report, report.id), (card, card.id), (report, "again")):
            await js.publish(event.nats_subject, event.to_json(), headers={"Nats-Msg-Id": msg_id})
        await nc.close()
        url = f"/v1/households/{created['id']}"
        for _ in range(100):
            shown = (await registry.get(url, headers=bearer(token(*READ)))).json()
            if shown["verification"] and shown["entitlements"]:
                break
            await asyncio.sleep(0.05)
        assert shown["verification"]["per_capita_income_fen"] == 52000
        assert shown["verification"]["needs_review"] is True
        assert shown["entitlements"]["measures"][0]["amount_fen"] == 22000
        await asyncio.sleep(0.5)  # time for the second copy of the report to be handled
        shown = (await registry.get(url, headers=bearer(token(*READ)))).json()
        # Results from other services are no one's edit: the version that guards people's
        # edits stays, so a reviewer who read the file before they landed is not refused.
        assert shown["version"] == 1
        edited = await registry.patch(
            url,
            json={"causes": ["illness", "disability"]},
            headers={**bearer(token("registry:write")), "If-Match": '"1"'},
        )
        assert edited.status_code == 200, edited.text
        assert edited.headers["etag"] == '"2"'
        assert edited.json()["verification"]["per_capita_income_fen"] == 52000
        assert edited.json()["entitlements"]["measures"][0]["amount_fen"] == 22000
        history = (await registry.get(f"{url}/history", headers=bearer(token(*READ)))).json()
        assert history[0]["action"] == "apply"
        assert sorted(h["action"] for h in history[1:]) == [
            "change",
            "entitlements_attached",
            "verification_attached",
        ]


class TestEnrolledLife:
    async def test_enrol_record_incomes_exit_and_count_it_against_the_yearly_target(
        self,
        registry_settings,
        token: Callable[..., str],  # type: ignore[no-untyped-def]
    ) -> None:
        from services.registry.app import create_app
        from tests.conftest import running

        settings = registry_settings.model_copy(update={"notice_days": {"": 7, "4113": 0}})
        async with running(create_app(settings)) as registry:
            walks = [await enrolled(registry, token, serial=s) for s in (1, 2)]
            for walk in walks:
                done = await walk.step("enroll", "review:county")
                assert done.json()["enrolled_on"] == date.today().isoformat()
            url = f"/v1/households/{walks[0].id}"
            write = bearer(token("registry:write"))
            for month, fen in (("2026-09", 180000), ("2026-10", 190000), ("2026-10", 200000)):
                recorded = await registry.put(
                    f"{url}/incomes/{month}",
                    headers=write,
                    json={"month": month, "income_fen": fen},
                )
                assert recorded.status_code == 200, recorded.text
            incomes = (await registry.get(f"{url}/incomes", headers=bearer(token(*READ)))).json()
            assert [(i["month"], i["income_fen"]) for i in incomes] == [
                ("2026-09", 180000),
                ("2026-10", 200000),
            ]
            walks[0].etag = (await registry.get(url, headers=bearer(token(*READ)))).headers["etag"]
            no_kind = await walks[0].step(
                "exit", "review:county", expect=422, comment="连续6个月收入高于低保标准"
            )
            assert no_kind.json()["errors"][0]["field"] == "exit_kind"
            exited = await walks[0].step(
                "exit", "review:county", exit_kind="tuokun", comment="连续6个月收入高于低保标准"
            )
            assert exited.json()["exit"]["kind"] == "tuokun"
            overdue = (
                await registry.get(
                    "/v1/households", headers=bearer(token(*READ)), params={"visit_overdue": "true"}
                )
            ).json()["items"]
            assert [i["id"] for i in overdue] == [walks[1].id]
            year = date.today().year
            await registry.put(
                f"/v1/targets/4113/{year}",
                json={"share_percent": 40},
                headers=bearer(token("review:county")),
            )
            stats = (
                await registry.get(
                    "/v1/statistics", headers=bearer(token(*READ)), params={"region": "4113"}
                )
            ).json()
        assert stats["progress"] == [
            {
                "region": "411302",
                "on_file_at_start": 0,
                "enrolled": 2,
                "exited": 1,
                "target_share_percent": 40,
                "target_exits": 0,
                "target_met": True,
            }
        ]
        assert {(c["status"], c["households"]) for c in stats["counts"]} == {
            ("enrolled", 1),
            ("exited", 1),
        }


class TestMemberChanges:
    async def test_a_members_circumstances_change_with_history_and_an_event(
        self, registry: httpx.AsyncClient, token: Callable[..., str], nats_url: str
    ) -> None:
        nc = await nats.connect(nats_url)
        sub = await nc.subscribe("bangfu.registry.household.changed.>")
        created = (await file_household(registry, token)).json()
        member_id = created["members"][0]["id"]
        url = f"/v1/households/{created['id']}/members/{member_id}"
        write = {**bearer(token("registry:write")), "If-Match": '"1"'}
        changed = await registry.patch(
            url,
            headers=write,
            json={
                "employment": "employed",
                "phone": "13700001234",
                "health": {"chronic_illness": True},
            },
        )
        assert changed.status_code == 200, changed.text
        head = changed.json()["members"][0]
        assert (head["employment"], head["phone"], head["health"]["chronic_illness"]) == (
            "employed",
            "137****1234",
            True,
        )
        event = json.loads((await sub.next_msg(timeout=5)).data)
        await nc.close()
        assert sorted(event["data"]["fields"]) == [
            "members.employment",
            "members.health",
            "members.phone",
        ]
        history = (
            await registry.get(
                f"/v1/households/{created['id']}/history", headers=bearer(token(*READ))
            )
        ).json()
        changes = {c["field"]: c for c in history[-1]["changes"]}
        assert changes["members[张*明].employment"]["old"] == "unemployed"
        assert changes["members[张*明].phone"]["new"] == "137****1234"
        for forbidden in (
            {"identity_number": identity_number(serial=5)},
            {"relation": "child"},
            {"employment": None},
        ):
            refused = await registry.patch(
                url, json=forbidden, headers={**bearer(token("registry:write")), "If-Match": '"2"'}
            )
            assert refused.status_code == 422, forbidden
