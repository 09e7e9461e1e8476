"""Verifications end to end: the API, the worker, the sandbox over HTTP and NATS, the registry."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event

from services.verification import service, store
from services.verification.app import create_app
from services.verification.domain.departments import Department
from services.verification.domain.report import canonical_json
from services.verification.settings import VerificationSettings
from services.verification.worker import NotFiled, Verifier
from shared.auth import Principal
from shared.identity import mask_identity_number
from tests.conftest import POSTGRES_URL, running
from tests.helpers import eventually, identity_number
from tests.services.verification.conftest import auth, wait_for

TODAY = date.today()
ALL = [d.value for d in Department]


async def consent_for(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    number: str,
    *,
    departments: list[str] | None = None,
    region: str = "411302",
    **fields: Any,
) -> dict[str, Any]:
    body = {
        "identity_number": number,
        "region": region,
        "signed_by": "张三明",
        "signed_on": (TODAY - timedelta(days=3)).isoformat(),
        "expires_on": (TODAY + timedelta(days=365)).isoformat(),
        "departments": departments or ALL,
        "document_ref": f"宛城授权-{number[-6:]}",
        **fields,
    }
    response = await client.post("/v1/consents", json=body, headers=headers)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def inline(*numbers: str, **fields: Any) -> dict[str, Any]:
    return {
        "members": [{"member_id": f"m{i}", "identity_number": n} for i, n in enumerate(numbers)],
        "region": "411302",
        "purpose": "申请审核",
        **fields,
    }


async def finished(client: httpx.AsyncClient, location: str, headers: dict[str, str]) -> Any:
    return await wait_for(
        client, location, headers, lambda b: b["status"] in ("completed", "failed")
    )


async def report_of(
    client: httpx.AsyncClient, verification_id: str, headers: dict[str, str]
) -> Any:
    response = await client.get(f"/v1/verifications/{verification_id}/report", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


class TestRequest:
    async def test_a_consented_household_gets_a_complete_report_with_its_evidence(
        self, verification: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        headers = auth(token)
        numbers = [identity_number(serial=301), identity_number(serial=302)]
        consents = [await consent_for(verification, headers, n) for n in numbers]

        response = await verification.post(
            "/v1/verifications", json=inline(*numbers), headers=headers
        )

        assert response.status_code == 202, response.text
        location = response.headers["Location"]
        assert location == f"/v1/verifications/{response.json()['id']}"
        assert {s for m in response.json()["members"] for s in m["consent"].values()} == {"valid"}
        status = await finished(verification, location, headers)
        assert status["status"] == "completed"
        assert status["report_version"] == 1
        report = await report_of(verification, status["id"], headers)
        items = report["report"]["items"]
        assert len(items) == 2 * 11
        assert {i["status"] for i in items} == {"ok"}
        assert all(i["request_hash"] and i["source"] and i["as_of"] for i in items)
        assert report["report"]["income_complete"] is True
        # The stored report is the one its hash was made of.
        hashed = canonical_json(report["report"]).encode()
        assert hashlib.sha256(hashed).hexdigest() == report["content_hash"]
        assert numbers[0] not in json.dumps(report)  # masked in the stored report

        # who looked at my data: eleven queries, each under the person's consent
        looked = await verification.post(
            "/v1/persons/queries", json={"identity_number": numbers[0]}, headers=headers
        )
        assert looked.status_code == 200
        queries = looked.json()
        assert sorted(q["department"] for q in queries) == sorted(ALL)
        assert {q["consent_id"] for q in queries} == {consents[0]["id"]}
        assert {q["purpose"] for q in queries} == {"申请审核"}
        assert {q["requested_by"] for q in queries} == {"test-client"}
        assert all(q["response_digest"] for q in queries)
        # The log's rows keep the answers too, encrypted; the log's readers get no part of them.
        assert {frozenset(q) for q in queries} == {
            frozenset(
                {
                    "queried_at",
                    "department",
                    "requested_by",
                    "purpose",
                    "consent_id",
                    "outcome",
                    "request_hash",
                    "response_digest",
                    "verification_id",
                    "household_id",
                }
            )
        }

    async def test_the_report_prints_as_html_with_masked_numbers(
        self, verification: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        headers = auth(token)
        number = identity_number(serial=303)
        await consent_for(verification, headers, number)
        created = await verification.post("/v1/verifications", json=inline(number), headers=headers)
        status = await finished(verification, created.headers["Location"], headers)

        page = await verification.get(
            f"/v1/verifications/{status['id']}/report", headers={**headers, "Accept": "text/html"}
        )

        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "家庭经济状况核对报告" in page.text
        assert "税务" in page.text and "不动产登记" in page.text
        assert number not in page.text
        assert mask_identity_number(number) in page.text

    async def test_no_consent_at_all_is_refused_and_no_department_is_called(
        self, verification: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        headers = auth(token)
        number = identity_number(serial=304)

        response = await verification.post(
            "/v1/verifications", json=inline(number), headers=headers
        )

        assert response.status_code == 403
        problem = response.json()
        assert problem["type"].endswith("/no-consent")
        assert set(problem["members"][0]["consent"].values()) == {"missing"}
        departments = (await verification.get("/v1/departments", headers=headers)).json()
        assert sum(d["calls"] for d in departments) == 0
        looked = await verification.post(
            "/v1/persons/queries", json={"identity_number": number}, headers=headers
        )
        assert looked.json() == []

    @pytest.mark.parametrize("state", ["expired", "revoked"])
    async def test_a_consent_not_in_force_counts_as_none(
        self, verification: httpx.AsyncClient, token: Callable[..., str], state: str
    ) -> None:
        headers = auth(token)
        number = identity_number(serial=305 + ["expired", "revoked"].index(state))
        dates = {
            "expired": {
                "signed_on": (TODAY - timedelta(days=400)).isoformat(),
                "expires_on": (TODAY - timedelta(days=1)).isoformat(),
            },
            "revoked": {},
        }[state]
        consent = await consent_for(verification, headers, number, **dates)
        if state == "revoked":
            revoked = await verification.post(
                f"/v1/consents/{consent['id']}/revoke", json={"reason": "本人撤回"}, headers=headers
            )
            assert revoked.status_code == 200

        response = await verification.post(
            "/v1/verifications", json=inline(number), headers=headers
        )

        assert response.status_code == 403
        assert set(response.json()["members"][0]["consent"].values()) == {state}

    async def test_consent_for_some_departments_serves_those_and_marks_the_rest(
        self, verification: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        headers = auth(token)
        covered, uncovered = identity_number(serial=311), identity_number(serial=312)
        await consent_for(verification, headers, covered, departments=["tax", "finance"])
        created = await verification.post(
            "/v1/verifications", json=inline(covered, uncovered), headers=headers
        )
        assert created.status_code == 202
        status = await finished(verification, created.headers["Location"], headers)
        report = await report_of(verification, status["id"], headers)

        by_status: dict[str, set[tuple[str, str]]] = {}
        for item in report["report"]["items"]:
            by_status.setdefault(item["status"], set()).add((item["member_id"], item["department"]))
        assert by_status["ok"] == {("m0", "tax"), ("m0", "finance")}
        assert len(by_status["no_consent"]) == 22 - 2
        reasons = {i["reason"] for i in report["report"]["items"] if i["status"] == "no_consent"}
        assert reasons == {"consent not_covered", "consent missing"}

    async def test_declared_income_far_from_verified_income_is_flagged_with_its_size(
        self, verification: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        headers = auth(token)
        number = identity_number(serial=313)
        await consent_for(verification, headers, number)
        declared = [{"member_id": "m0", "kind": "income", "item": "wages", "amount_fen": 0}]
        created = await verification.post(
            "/v1/verifications", json=inline(number, declared=declared), headers=headers
        )
        status = await finished(verification, created.headers["Location"], headers)
        report = (await report_of(verification, status["id"], headers))["report"]

        verified = sum(
            income["monthly_fen"]
            for item in report["items"]
            if item["department"] == "tax" and item["findings"]
            for income in item["findings"]["incomes"]
        )
        income_flags = [d for d in report["discrepancies"] if d["item"] == "monthly_income"]
        if verified <= 10_000:
            assert income_flags == []
        else:
            assert len(income_flags) == 1
            assert income_flags[0]["declared_fen"] == 0
            assert income_flags[0]["size_fen"] == income_flags[0]["verified_fen"] >= verified

    async def test_bad_requests_are_problems(
        self, verification: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        headers = auth(token)
        neither = await verification.post(
            "/v1/verifications", json={"purpose": "x"}, headers=headers
        )
        bad_number = await verification.post(
            "/v1/verifications", json=inline("411302198005171230"), headers=headers
        )
        foreign = await verification.post(
            "/v1/verifications",
            json=inline(identity_number(serial=314)),
            headers=auth(token, ["13"]),
        )
        unknown = await verification.get("/v1/verifications/nope", headers=headers)
        no_household = await verification.post(
            "/v1/verifications",
            json={"household_id": "0190a000-0000-7000-8000-000000000000", "purpose": "x"},
            headers=headers,
        )

        assert neither.status_code == 422
        assert bad_number.status_code == 422
        assert foreign.status_code == 403
        assert unknown.status_code == 404
        assert no_household.status_code == 404
        assert no_household.json()["type"].endswith("/household-not-found")
        for response in (neither, bad_number, foreign, unknown, no_household):
            assert response.headers["content-type"] == "application/problem+json"


class TestFaults:
    @pytest.mark.parametrize(
        ("fault", "status"),
        [
            ("timeout", "unavailable"),
            ("http_500", "unavailable"),
            ("malformed_json", "error"),
            ("wrong_schema", "error"),
            ("slow_drip", "unavailable"),
        ],
    )
    async def test_a_faulty_department_is_named_and_fetched_again_when_it_returns(
        self,
        verification: httpx.AsyncClient,
        sandbox: httpx.AsyncClient,
        token: Callable[..., str],
        fault: str,
        status: str,
    ) -> None:
        headers = auth(token)
        number = identity_number(
            serial=320
            + ["timeout", "http_500", "malformed_json", "wrong_schema", "slow_drip"].index(fault)
        )
        await consent_for(verification, headers, number)
        await sandbox.put("/admin/departments/finance", json={"fault": fault, "drip_seconds": 3})
        created = await verification.post("/v1/verifications", json=inline(number), headers=headers)
        first = await finished(verification, created.headers["Location"], headers)
        report = (await report_of(verification, first["id"], headers))["report"]

        finance = [i for i in report["items"] if i["department"] == "finance"]
        assert [(i["status"], bool(i["reason"]), i["findings"]) for i in finance] == [
            (status, True, None)
        ]
        assert {i["status"] for i in report["items"] if i["department"] != "finance"} == {"ok"}
        assert report["unavailable_departments"] == ["finance"]
        assert report["asset_verdicts"]["deposits_per_capita"] in ("unknown", "fail")

        # the department comes back: the item is fetched again, a second version is made
        await sandbox.delete("/admin/departments/finance")
        second = await wait_for(
            verification, created.headers["Location"], headers, lambda b: b["report_version"] == 2
        )
        assert second["refetch_at"] is None
        latest = (await report_of(verification, first["id"], headers))["report"]
        assert {i["status"] for i in latest["items"]} == {"ok"}
        assert latest["unavailable_departments"] == []
        versions = await verification.get(
            f"/v1/verifications/{first['id']}/reports", headers=headers
        )
        assert [v["version"] for v in versions.json()] == [1, 2]

    async def test_every_department_down_gives_a_report_of_unavailable_items(
        self, verification: httpx.AsyncClient, sandbox: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        headers = auth(token)
        number = identity_number(serial=330)
        await consent_for(verification, headers, number)
        for code in ALL:
            await sandbox.put(f"/admin/departments/{code}", json={"fault": "http_500"})
        created = await verification.post("/v1/verifications", json=inline(number), headers=headers)
        status = await finished(verification, created.headers["Location"], headers)
        report = (await report_of(verification, status["id"], headers))["report"]

        assert status["status"] == "completed"
        assert {i["status"] for i in report["items"]} == {"unavailable"}
        assert sorted(report["unavailable_departments"]) == sorted(ALL)
        assert report["income_complete"] is False
        assert report["per_capita_income_fen"] == 0
        assert set(report["asset_verdicts"].values()) == {"unknown"}
        health = {
            d["department"]: d
            for d in (await verification.get("/v1/departments", headers=headers)).json()
        }
        assert all(health[code]["failures"] >= 1 for code in ALL)
        assert health["tax"]["last_error"]

    async def test_the_nats_transport_serves_the_same_report(
        self, make_verification: Callable[..., Any], token: Callable[..., str]
    ) -> None:
        headers = auth(token)
        number = identity_number(serial=331)
        async with make_verification(departments_transport="nats") as client:
            await consent_for(client, headers, number)
            created = await client.post("/v1/verifications", json=inline(number), headers=headers)
            status = await finished(client, created.headers["Location"], headers)
            report = (await report_of(client, status["id"], headers))["report"]
            health = (await client.get("/v1/departments", headers=headers)).json()

        assert {i["status"] for i in report["items"]} == {"ok"}
        assert {i["source"] for i in report["items"]} == {f"{d}:nats" for d in ALL}
        assert {d["transport"] for d in health} == {"nats"}


async def test_each_department_is_asked_on_kept_alive_connections_within_its_limit(
    make_verification: Callable[..., Any], sandbox: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    headers = auth(token)
    limit = 2
    numbers = [identity_number(serial=serial) for serial in (381, 382, 383, 384)]
    departments = {
        code: {"timeout_seconds": 5.0, "retries": 0, "concurrency": limit} for code in ALL
    }
    async with make_verification(departments=departments) as client:
        for number in numbers:
            await consent_for(client, headers, number)
        before = (await sandbox.get("/admin/departments")).json()
        # 2 households × 4 members at once: 8 queries to each department in one burst. Asked
        # one after the other, a slow machine let the connections idle past their 5 s between
        # the two (closed then, as they should be), and the count measured that, not reuse.
        created = await asyncio.gather(
            *(
                client.post("/v1/verifications", json=inline(*numbers), headers=headers)
                for _ in range(2)
            )
        )
        for response in created:
            status = await finished(client, response.headers["Location"], headers)
            assert status["status"] == "completed"
        after = (await sandbox.get("/admin/departments")).json()

    asked = {code: after[code]["answered"] - before[code]["answered"] for code in ALL}
    opened = {code: after[code]["connections"] - before[code]["connections"] for code in ALL}
    assert asked == dict.fromkeys(ALL, 8)
    # A connection per query (no reuse) would open 8; the pool holds `limit` at most.
    # As text: pytest shortens a dict given as the message, and hid which department it was.
    assert all(1 <= count <= limit for count in opened.values()), f"opened {opened}"


@pytest.mark.parametrize(
    ("fault", "status"),
    [("http_500", "unavailable"), ("timeout", "unavailable"), ("wrong_schema", "error")],
)
async def test_over_nats_a_faulty_department_is_named_too(
    make_verification: Callable[..., Any],
    sandbox: httpx.AsyncClient,
    token: Callable[..., str],
    fault: str,
    status: str,
) -> None:
    headers = auth(token)
    number = identity_number(serial=340 + ["http_500", "timeout", "wrong_schema"].index(fault))
    await sandbox.put("/admin/departments/real_estate", json={"fault": fault})
    async with make_verification(departments_transport="nats", refetch_seconds=3600) as client:
        await consent_for(client, headers, number)
        created = await client.post("/v1/verifications", json=inline(number), headers=headers)
        result = await finished(client, created.headers["Location"], headers)
        report = (await report_of(client, result["id"], headers))["report"]

    by_department = {i["department"]: i for i in report["items"]}
    assert by_department["real_estate"]["status"] == status
    assert by_department["real_estate"]["reason"]
    assert by_department["real_estate"]["source"] == "real_estate:nats"
    assert {i["status"] for d, i in by_department.items() if d != "real_estate"} == {"ok"}
    assert report["asset_verdicts"]["properties"] == "unknown"


async def test_a_nul_character_anywhere_is_a_422_not_a_500(
    verification: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    headers = auth(token)
    in_body = await verification.post(
        "/v1/verifications",
        json=inline(identity_number(serial=350), purpose="a\x00b"),
        headers=headers,
    )
    in_path = await verification.get("/v1/verifications/a%00b", headers=headers)
    in_query = await verification.get("/v1/verifications?household_id=a%00b", headers=headers)
    in_batch = await verification.post(
        "/v1/batches",
        json={"region": "411302", "household_ids": ["a\x00"], "purpose": "x"},
        headers=headers,
    )

    assert [r.status_code for r in (in_body, in_path, in_query, in_batch)] == [422] * 4


async def test_department_and_verification_metrics_are_exported(
    verification: httpx.AsyncClient, sandbox: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    headers = auth(token)
    numbers = [identity_number(serial=360), identity_number(serial=361)]
    for number in numbers:
        await consent_for(verification, headers, number)
    await sandbox.put("/admin/departments/vehicle", json={"fault": "http_500"})
    created = await verification.post("/v1/verifications", json=inline(*numbers), headers=headers)
    await finished(verification, created.headers["Location"], headers)

    text = (await verification.get("/metrics")).text

    # A question per member and department: two members, two of each.
    assert 'bangfu_department_up{department="tax"} 1.0' in text
    assert 'bangfu_department_requests_total{department="tax",outcome="ok"} 2.0' in text
    assert (
        'bangfu_department_requests_total{department="vehicle",outcome="unavailable"} 2.0' in text
    )
    assert 'bangfu_department_request_duration_seconds_count{department="finance"} 2.0' in text
    assert 'bangfu_verification_completed_total{outcome="completed"} 1.0' in text
    assert "bangfu_verification_duration_seconds_count 1.0" in text


async def test_the_list_shows_only_the_callers_regions(
    verification: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    headers = auth(token)
    number = identity_number(serial=370)
    await consent_for(verification, headers, number)
    created = await verification.post("/v1/verifications", json=inline(number), headers=headers)
    assert created.status_code == 202

    mine = await verification.get("/v1/verifications?limit=1", headers=auth(token, ["4113"]))
    elsewhere = await verification.get("/v1/verifications?limit=1", headers=auth(token, ["4101"]))

    assert [v["id"] for v in mine.json()] == [created.json()["id"]]
    assert elsewhere.json() == []


async def test_a_request_runs_at_once_in_a_free_slot_and_queues_when_none_is_free(
    make_verification: Callable[..., Any],
    sandbox: httpx.AsyncClient,
    token: Callable[..., str],
) -> None:
    """A caller's check is written claimed and run by the process that took it (no claim by
    the queue); with every slot taken it is queued, and the queue runs it once one frees
    (at once: the poll, a minute away, is not what finds it)."""
    headers = auth(token)
    numbers = [identity_number(serial=s) for s in (371, 372)]
    await sandbox.put("/admin/departments/tax", json={"latency_ms": {"fixed": 1500}})
    async with make_verification(workers=1, poll_seconds=60) as verification:
        for number in numbers:
            await consent_for(verification, headers, number)
        first = await verification.post(
            "/v1/verifications", json=inline(numbers[0]), headers=headers
        )
        second = await verification.post(
            "/v1/verifications", json=inline(numbers[1]), headers=headers
        )
        assert (first.status_code, second.status_code) == (202, 202)
        assert first.json()["status"] == "running"  # handed over, in the only slot
        assert second.json()["status"] == "queued"  # the slot is busy with the first
        done = [
            await finished(verification, r.headers["Location"], headers) for r in (first, second)
        ]
    assert [d["status"] for d in done] == ["completed", "completed"]
    assert done[0]["finished_at"] < done[1]["finished_at"]


@contextlib.contextmanager
def seeing_statements(app: Any, seen: Callable[..., None]) -> Iterator[None]:
    """`seen(connection, cursor, statement, ...)` before each statement the app's engines
    run (the units of work by key have one of their own on PostgreSQL)."""
    db = app.state.runtime.db
    engines = {db.engine.sync_engine, db.by_key_engine.sync_engine}
    for engine in engines:
        event.listen(engine, "before_cursor_execute", seen)
    try:
        yield
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", seen)


async def test_only_a_commit_that_queued_a_check_sends_the_queue_to_claim(
    verification_settings: VerificationSettings,
    sandbox: httpx.AsyncClient,
    token: Callable[..., str],
) -> None:
    """A check handed over and its report are committed with no claim by the queue after
    them: each claim took the one SQLite connection as the relay went to publish."""
    headers = auth(token)
    number = identity_number(serial=376)
    app = create_app(verification_settings.model_copy(update={"poll_seconds": 60}))
    claims: list[str] = []

    def count_claims(*args: Any) -> None:
        statement = args[2]
        if "FROM verification" in statement and "verification.not_before <=" in statement:
            claims.append(statement)

    async with running(app) as verification:
        await consent_for(verification, headers, number)
        with seeing_statements(app, count_claims):
            response = await verification.post(
                "/v1/verifications", json=inline(number), headers=headers
            )
            assert response.json()["status"] == "running"  # handed over
            done = await finished(verification, response.headers["Location"], headers)
            await asyncio.sleep(0.3)  # time for a claim woken by the report's commit or its slot
    assert done["status"] == "completed"
    assert claims == []


async def handed_over(
    app: FastAPI, number: str, filed: asyncio.Future[dict[str, Any]]
) -> service.Requested:
    """A caller's check made ready and handed over to the app's verifier, as the API does
    before its request is committed: its row and event are not written yet."""
    verifier: Verifier = app.state.verifier
    subject = service.Subject(
        household_id=None, region="411302", members=(("m0", number),), declared=()
    )
    ctx = service.Context(Principal("test", frozenset(), ("4113",)), verifier.keyring, date.today())
    async with verifier.db.unit_of_work() as uow:
        requested = await service.check_request(
            uow,
            ctx,
            subject=subject,
            purpose="复核",
            departments=list(Department),
            lease_seconds=verifier.promise_run(),
        )
    assert requested.row["status"] == "running"  # claimed: a slot was free
    verifier.hand_over(requested.row, subject, requested.people, filed)
    return requested


async def answered(sandbox: httpx.AsyncClient) -> int:
    return int((await sandbox.get("/admin/departments/tax")).json()["answered"])


async def _more(sandbox: httpx.AsyncClient, than: int) -> bool:
    return await answered(sandbox) > than


async def test_a_run_handed_over_asks_while_its_request_commits_and_reports_once_filed(
    verification: httpx.AsyncClient,
    verification_app: FastAPI,
    sandbox: httpx.AsyncClient,
    token: Callable[..., str],
) -> None:
    """The departments are asked as the request is written (2 ms of a single household's
    wait, bench/verification.py); the report waits for the row as stored."""
    headers = auth(token)
    number = identity_number(serial=378)
    await consent_for(verification, headers, number)
    before = await answered(sandbox)
    filed: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    requested = await handed_over(verification_app, number, filed)
    row = requested.row

    await eventually(lambda: _more(sandbox, before))  # asked, with nothing written yet
    await asyncio.sleep(0.2)
    missing = await verification.get(f"/v1/verifications/{row['id']}", headers=headers)
    assert missing.status_code == 404

    async with verification_app.state.runtime.db.unit_of_work() as uow:
        stored = await service.file(uow, row, requested.event)
        await uow.commit()
    assert stored is not None
    filed.set_result(stored)
    done = await finished(verification, f"/v1/verifications/{row['id']}", headers)
    assert done["status"] == "completed"
    report = await report_of(verification, row["id"], headers)
    assert sorted(i["department"] for i in report["report"]["items"]) == sorted(ALL)
    assert {i["status"] for i in report["report"]["items"]} == {"ok"}


async def test_a_run_whose_request_is_not_committed_is_filed_failed_with_who_looked(
    verification: httpx.AsyncClient,
    verification_app: FastAPI,
    sandbox: httpx.AsyncClient,
    token: Callable[..., str],
) -> None:
    """Its questions were put: they stay in the query log, under a failed verification, and
    no report is made."""
    headers = auth(token)
    number = identity_number(serial=379)
    await consent_for(verification, headers, number)
    filed: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    row = (await handed_over(verification_app, number, filed)).row
    filed.set_exception(NotFiled("OperationalError: database is locked"))

    async def filed_once_asked() -> Any:
        found = await verification.get(f"/v1/verifications/{row['id']}", headers=headers)
        return found.json() if found.status_code == 200 else None

    done = await eventually(filed_once_asked)
    assert done["status"] == "failed"
    assert done["reason"] == "its request was not committed: OperationalError: database is locked"
    report = await verification.get(f"/v1/verifications/{row['id']}/report", headers=headers)
    assert report.status_code == 404
    verifier: Verifier = verification_app.state.verifier
    async with verifier.db.unit_of_work() as uow:
        queries = await store.queries_about(
            uow.session, service.person_index_of(verifier.keyring, number)
        )
    assert sorted(q["department"] for q in queries if q["verification_id"] == row["id"]) == sorted(
        ALL
    )

    async def slot_free() -> bool:
        return all(t.get_name() != f"verification-run-{row['id']}" for t in verifier.tasks())

    await eventually(slot_free)


@pytest.mark.skipif(
    not POSTGRES_URL,
    reason="plans are PostgreSQL's; SQLite writes the report's rows around SQLAlchemy's cursor "
    "(shared.db.write_together)",
)
async def test_a_report_is_written_with_plans_kept_for_statements_by_key(
    verification_settings: VerificationSettings,
    sandbox: httpx.AsyncClient,
    token: Callable[..., str],
) -> None:
    """The report's statements find their rows by key, so PostgreSQL may keep their plans
    (`Database.unit_of_work(one_write=True)`, a unit by key): a 44-row insert planned at each
    execution took 0.93 ms, 0.68 ms with the cached plan. On PostgreSQL the one statement
    commits on its own."""
    headers = auth(token)
    number = identity_number(serial=377)
    app = create_app(verification_settings)
    writes: dict[str, set[tuple[bool, bool]]] = {}

    def note_the_unit(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        for table in ("department_query", "report"):
            if f"INSERT INTO {table} " in statement:  # PostgreSQL: one statement
                by_key = conn.engine.pool is app.state.runtime.db.by_key_engine.sync_engine.pool
                committing = conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT"
                writes.setdefault(table, set()).add((by_key, committing))

    async with running(app) as verification:
        await consent_for(verification, headers, number)
        with seeing_statements(app, note_the_unit):
            response = await verification.post(
                "/v1/verifications", json=inline(number), headers=headers
            )
            done = await finished(verification, response.headers["Location"], headers)
    assert done["status"] == "completed"
    assert writes == dict.fromkeys(("department_query", "report"), {(True, True)})
