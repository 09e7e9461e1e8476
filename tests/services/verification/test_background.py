"""What starts verifications without a caller: registry events, batches, department change
feeds and the yearly recheck — over the real registry, NATS and the sandbox process."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import nats
from fastapi import FastAPI
from sqlalchemy import select

from services.verification import consumers, store
from services.verification.worker import ANSWER_CONTEXT, Verifier
from shared.audit import audit_log
from shared.crypto import decrypt
from shared.events.envelope import CloudEvent, new_event
from tests.helpers import bearer, eventually, identity_number
from tests.services.registry.test_api import Walk, file_household
from tests.services.verification.conftest import auth, wait_for
from tests.services.verification.test_verifications import consent_for

TODAY = date.today()


async def verifications_of(
    client: httpx.AsyncClient, headers: dict[str, str], household_id: str
) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/verifications?household_id={household_id}", headers=headers)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()
    return found


async def summarised(
    registry: httpx.AsyncClient, token: Callable[..., str], household_id: str
) -> dict[str, Any]:
    """The file once the registry has noted the application's report on it (a new version,
    so a step taken before it would meet a stale ETag)."""
    read = bearer(token("registry:read"))

    async def noted() -> Any:
        body = (await registry.get(f"/v1/households/{household_id}", headers=read)).json()
        return body if body["verification"] else None

    found: dict[str, Any] = await eventually(noted)
    return found


async def filed(
    registry_server: str, token: Callable[..., str], verification: httpx.AsyncClient, serial: int
) -> tuple[httpx.AsyncClient, str, str]:
    """A household filed in the registry whose head consented: (registry client, id, number)."""
    number = identity_number(serial=serial)
    await consent_for(verification, auth(token), number)
    registry = httpx.AsyncClient(base_url=registry_server, timeout=10)
    created = await file_household(registry, token, head_number=number)
    return registry, created.json()["id"], number


class TestRegistryEvents:
    async def test_an_application_is_verified_once_and_the_registry_gets_the_summary(
        self,
        verification: httpx.AsyncClient,
        verification_app: FastAPI,
        registry_server: str,
        token: Callable[..., str],
        nats_url: str,
    ) -> None:
        headers = auth(token)
        registry, household_id, _ = await filed(registry_server, token, verification, 401)

        async def completed() -> list[dict[str, Any]]:
            found = await verifications_of(verification, headers, household_id)
            return [v for v in found if v["status"] == "completed"]

        [done] = await eventually(completed)
        assert done["trigger"] == "applied"

        # The registry consumed verification.completed and shows the summary on the file.
        async def annotated() -> Any:
            body = (
                await registry.get(
                    f"/v1/households/{household_id}", headers=bearer(token("registry:read"))
                )
            ).json()
            return body["verification"]

        summary = await eventually(annotated)
        assert summary["verification_id"] == done["id"]
        assert summary["report_version"] == 1
        assert isinstance(summary["per_capita_income_fen"], int)

        # The same event delivered again: under a new message id (past JetStream's duplicate
        # window) and straight to the handler — neither starts a second verification.
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        sub = await js.subscribe("bangfu.registry.household.applied.>", ordered_consumer=True)
        message = await sub.next_msg(timeout=5)
        event = CloudEvent.from_json(message.data)
        assert event.data["household_id"] == household_id
        await js.publish(
            message.subject, message.data, headers={"Nats-Msg-Id": "again-" + event.id}
        )
        await nc.close()
        db = verification_app.state.runtime.db
        async with db.unit_of_work() as uow:
            await consumers.on_household_applied(event, uow)
            await uow.commit()
        await asyncio.sleep(1.0)
        assert len(await verifications_of(verification, headers, household_id)) == 1
        await registry.aclose()

    async def test_a_material_change_verifies_again_and_an_address_change_does_not(
        self,
        verification: httpx.AsyncClient,
        registry_server: str,
        token: Callable[..., str],
    ) -> None:
        headers = auth(token)
        registry, household_id, _ = await filed(registry_server, token, verification, 402)
        current = await summarised(registry, token, household_id)
        write = bearer(token("registry:write"))
        member_id = current["members"][0]["id"]

        moved = await registry.patch(
            f"/v1/households/{household_id}",
            json={"location": {"region": "411302", "address": "新华路8号"}},
            headers={**write, "If-Match": f'"{current["version"]}"'},
        )
        assert moved.status_code == 200, moved.text
        declared = await registry.post(
            f"/v1/households/{household_id}/declarations",
            json={
                "items": [
                    {"member_id": member_id, "kind": "income", "item": "wages", "amount_fen": 0}
                ]
            },
            headers={**write, "If-Match": moved.headers["etag"]},
        )
        assert declared.status_code == 201, declared.text

        async def two_done() -> list[dict[str, Any]]:
            found = await verifications_of(verification, headers, household_id)
            return found if sum(v["status"] == "completed" for v in found) == 2 else []

        found = await eventually(two_done)
        assert sorted(v["trigger"] for v in found) == ["applied", "changed"]
        await asyncio.sleep(1.0)  # the address change had its chance to start one too
        assert len(await verifications_of(verification, headers, household_id)) == 2
        latest = [v for v in found if v["trigger"] == "changed"][0]
        report = (
            await verification.get(f"/v1/verifications/{latest['id']}/report", headers=headers)
        ).json()
        flagged = [d for d in report["report"]["discrepancies"] if d["item"] == "monthly_income"]
        verified_income = sum(
            i["monthly_fen"]
            for item in report["report"]["items"]
            if item["findings"]
            for i in item["findings"]["incomes"]
        )
        assert bool(flagged) == (verified_income > 10_000)
        await registry.aclose()


class TestFollowingEnrolledHouseholds:
    async def test_a_department_change_rechecks_the_enrolled_household_within_seconds(
        self,
        verification: httpx.AsyncClient,
        verification_app: FastAPI,
        sandbox: httpx.AsyncClient,
        registry_server: str,
        token: Callable[..., str],
    ) -> None:
        headers = auth(token)
        registry, household_id, number = await filed(registry_server, token, verification, 403)
        current = await summarised(registry, token, household_id)
        walk = Walk(registry, token, household_id)
        walk.etag = f'"{current["version"]}"'
        await walk.step("community_review", "review:community")
        await walk.plan()
        await walk.step("street_review", "review:street")
        await walk.step("county_approve", "review:county")
        await walk.step("start_notice", "review:county")
        await walk.step("enroll", "review:county")
        db = verification_app.state.runtime.db

        async def enrolled() -> bool:
            async with db.unit_of_work() as uow:
                due = await store.due_for_recheck(
                    uow.session, before=datetime.now(UTC) + timedelta(days=1), limit=10
                )
            return any(h["household_id"] == household_id for h in due)

        await eventually(enrolled)
        await eventually(lambda: verifications_of(verification, headers, household_id))

        changed = await sandbox.post(
            "/admin/changes",
            json={
                "department": "hukou",
                "identity_number": number,
                "region": "411302",
                "kind": "death",
            },
        )
        assert changed.status_code == 202, changed.text

        async def rechecked() -> list[dict[str, Any]]:
            found = await verifications_of(verification, headers, household_id)
            return [v for v in found if v["trigger"] == "department_change"]

        [recheck] = await eventually(rechecked, timeout=20)
        assert "hukou" in recheck["purpose"]

        # A person outside every followed household changes: nothing starts.
        await sandbox.post(
            "/admin/changes",
            json={
                "department": "hukou",
                "identity_number": identity_number(serial=499),
                "region": "411302",
                "kind": "death",
            },
        )
        await asyncio.sleep(1.0)
        assert len(await rechecked()) == 1
        await registry.aclose()

    async def test_the_yearly_recheck_queues_each_enrolled_household_once(
        self, verification: httpx.AsyncClient, verification_app: FastAPI, token: Callable[..., str]
    ) -> None:
        event = new_event(
            service="registry",
            aggregate="household",
            name="enrolled",
            subject="h-yearly",
            region="411302",
            sequence=6,
            data={
                "household_id": "h-yearly",
                "enrolled_on": TODAY.isoformat(),
                "category": "dibao",
            },
        )
        db = verification_app.state.runtime.db
        async with db.unit_of_work() as uow:
            await consumers.on_household_enrolled(event, uow)
            await uow.commit()
        verifier: Verifier = verification_app.state.verifier

        # The service's own recheck duty runs once when its background work starts (after NATS
        # answers), so it may queue the household before this call does: either way, once.
        await verifier.recheck_due(today=TODAY)
        assert await verifier.recheck_due(today=TODAY) == 0  # the same day again: nothing more
        found = await verifications_of(verification, auth(token), "h-yearly")
        assert [v["trigger"] for v in found] == ["recheck"]


class TestTheDepartmentFeedConsumer:
    async def test_it_runs_under_the_runtime_named_by_readyz_and_counted(
        self, verification: httpx.AsyncClient, verification_app: FastAPI
    ) -> None:
        name = consumers.department_feed(verification_app.state.settings).name
        ready = await verification.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"][f"consumer {name}"] == "ok"
        metrics = (await verification.get("/metrics")).text
        assert f'bangfu_consumer_restarts_total{{consumer="{name}"}} 0.0' in metrics
        runners = verification_app.state.runtime.consumers
        assert name in {runner.subscription.name for runner in runners}


class TestEvidence:
    async def test_raw_answers_are_purged_after_their_time_and_the_report_stays(
        self, verification: httpx.AsyncClient, verification_app: FastAPI, token: Callable[..., str]
    ) -> None:
        headers = auth(token)
        number = identity_number(serial=410)
        await consent_for(verification, headers, number)
        created = await verification.post(
            "/v1/verifications",
            json={
                "members": [{"member_id": "m0", "identity_number": number}],
                "region": "411302",
                "purpose": "复核",
            },
            headers=headers,
        )
        status = await wait_for(
            verification, created.headers["Location"], headers, lambda b: b["status"] == "completed"
        )
        verifier: Verifier = verification_app.state.verifier
        log = (
            store.department_query.select()
            .where(store.department_query.c.verification_id == status["id"])
            .order_by(store.department_query.c.id)
        )
        async with verifier.db.unit_of_work() as uow:
            assert await store.count_raw_answers(uow.session, status["id"]) == 11
            asked = (await uow.session.execute(log)).mappings().all()
        assert len(asked) == 11 and all(number not in q["answer_cipher"] for q in asked)
        for question in asked:  # encrypted at rest, and the answer its digest was taken of
            answer = decrypt(verifier.keyring, question["answer_cipher"], context=ANSWER_CONTEXT)
            assert hashlib.sha256(answer.encode()).hexdigest() == question["response_digest"]

        assert await verifier.purge(now=datetime.now(UTC) + timedelta(days=89)) == 0
        assert await verifier.purge(now=datetime.now(UTC) + timedelta(days=91)) >= 11
        async with verifier.db.unit_of_work() as uow:
            assert await store.count_raw_answers(uow.session, status["id"]) == 0
            kept = (await uow.session.execute(log)).mappings().all()
        # The questions stay in the log ("who looked at my data"), their answers gone.
        assert [(q["id"], q["response_digest"]) for q in kept] == [
            (q["id"], q["response_digest"]) for q in asked
        ]
        assert {(q["answer_cipher"], q["purge_after"]) for q in kept} == {(None, None)}
        async with verifier.db.unit_of_work() as uow:
            audit_rows = (
                await uow.session.execute(select(audit_log.c.action, audit_log.c.detail))
            ).all()
        report = await verification.get(f"/v1/verifications/{status['id']}/report", headers=headers)
        assert report.status_code == 200
        reports = [
            json.loads(d) if isinstance(d, str) else d
            for a, d in audit_rows
            if a == "verification.report"
        ]
        assert len(reports) == 1
        exchanges = reports[0]["exchanges"]
        assert len(exchanges) == 11
        assert all(
            e["consent_id"] and e["request_hash"] and e["response_digest"] for e in exchanges
        )
