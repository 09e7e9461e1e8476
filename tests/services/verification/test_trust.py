"""What a token of one region may do, and what fails for good: confinement of every household
id and consent to the caller's regions, and work that cannot succeed ending `failed` (issue 11)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import nats
from sqlalchemy import select

from services.registry.settings import RegistrySettings
from services.verification.service import REGISTRY_PURPOSE_MAX, registry_purpose
from services.verification.settings import AssetLimitSettings
from shared.audit import audit_log
from shared.db import Database
from tests.helpers import bearer, eventually, identity_number
from tests.services.registry.test_api import file_household
from tests.services.verification.conftest import auth, wait_for
from tests.services.verification.test_verifications import (
    ALL,
    consent_for,
    finished,
    inline,
    report_of,
)

TODAY = date.today()
WUHAN = "420102"  # a county of another province than the tests' 411302
LIMIT = AssetLimitSettings(
    deposits_per_capita_fen=1_512_000,
    max_properties=1,
    max_vehicles=0,
    business_capital_fen=5_000_000,
    source="测试",
)


async def pii_reads(settings: RegistrySettings, household_id: str) -> list[str | None]:
    """The purposes of the registry's audited clear reads of one household."""
    url, schema = settings.database
    db = Database(url, schema=schema)
    async with db.sessionmaker() as session:
        rows = await session.execute(
            select(audit_log.c.purpose).where(
                audit_log.c.action == "household.pii_read", audit_log.c.target == household_id
            )
        )
        purposes = list(rows.scalars())
    await db.dispose()
    return purposes


async def answered(sandbox: httpx.AsyncClient) -> int:
    """How many queries the department sandbox has answered so far, all departments."""
    departments = (await sandbox.get("/admin/departments")).json()
    return sum(d["answered"] + d["faulted"] for d in departments.values())


async def file_in(registry_server: str, token: Callable[..., str], region: str, number: str) -> str:
    async with httpx.AsyncClient(base_url=registry_server, timeout=10) as registry:
        created = await file_household(
            registry, lambda *s: token(*s, regions=[region[:2]]), region=region, head_number=number
        )
    household_id: str = created.json()["id"]
    return household_id


class TestHouseholdIdsOfAnotherRegion:
    async def test_a_batch_naming_another_regions_household_never_verifies_it(
        self,
        verification: httpx.AsyncClient,
        registry_server: str,
        registry_settings: RegistrySettings,
        token: Callable[..., str],
    ) -> None:
        theirs = auth(token, ["42"])
        number = identity_number(region=WUHAN, serial=501)
        await consent_for(verification, theirs, number, region=WUHAN)
        household_id = await file_in(registry_server, token, WUHAN, number)
        mine = auth(token, ["4113"])

        created = await verification.post(
            "/v1/batches",
            json={"region": "411302", "household_ids": [household_id], "purpose": "越权抽查"},
            headers=mine,
        )

        assert created.status_code == 202, created.text
        done = await wait_for(
            verification, created.headers["Location"], mine, lambda b: b["status"] != "running"
        )
        assert (done["done"], done["failed"]) == (0, 1)
        lines = await verification.get(f"{created.headers['Location']}/results", headers=mine)
        [result] = [json.loads(line) for line in lines.text.splitlines()]
        assert result["status"] == "failed"
        assert result["report_version"] == 0
        assert WUHAN not in result["reason"]
        report = await verification.get(f"/v1/verifications/{result['id']}/report", headers=mine)
        assert report.status_code == 404
        looked = await verification.post(
            "/v1/persons/queries", json={"identity_number": number}, headers=theirs
        )
        assert result["id"] not in {q["verification_id"] for q in looked.json()}
        # its members' numbers were never read for the batch
        assert "核对: 越权抽查" not in await pii_reads(registry_settings, household_id)

    async def test_a_verification_of_another_regions_household_is_404_before_any_clear_read(
        self,
        verification: httpx.AsyncClient,
        registry_server: str,
        registry_settings: RegistrySettings,
        token: Callable[..., str],
    ) -> None:
        number = identity_number(region=WUHAN, serial=502)
        household_id = await file_in(registry_server, token, WUHAN, number)

        response = await verification.post(
            "/v1/verifications",
            json={"household_id": household_id, "purpose": "越权核对"},
            headers=auth(token, ["4113"]),
        )

        assert response.status_code == 404
        assert response.json()["type"].endswith("/household-not-found")
        assert "核对: 越权核对" not in await pii_reads(registry_settings, household_id)
        departments = (await verification.get("/v1/departments", headers=auth(token))).json()
        assert sum(d["calls"] for d in departments) == 0

    async def test_a_batch_of_more_than_10000_households_is_refused(
        self, verification: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        headers = auth(token)
        ids = [f"h-{i}" for i in range(10_001)]

        response = await verification.post(
            "/v1/batches",
            json={"region": "411302", "household_ids": ids, "purpose": "年度复核"},
            headers=headers,
        )

        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "household_ids"
        listed = await verification.get("/v1/verifications", headers=headers)
        assert listed.json() == []


class TestAnEmptyRegionsClaim:
    async def test_sees_nothing_in_any_list_or_search(
        self, verification: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        headers = auth(token)
        number = identity_number(serial=510)
        consent = await consent_for(verification, headers, number)
        created = await verification.post("/v1/verifications", json=inline(number), headers=headers)
        await finished(verification, created.headers["Location"], headers)
        batch = await verification.post(
            "/v1/batches",
            json={"region": "411302", "household_ids": ["h-1"], "purpose": "抽查"},
            headers=headers,
        )
        nowhere = bearer(token("verification:request", regions=[]))

        listed = await verification.get("/v1/verifications", headers=nowhere)
        one = await verification.get(created.headers["Location"], headers=nowhere)
        consents = await verification.post(
            "/v1/consents/search", json={"identity_number": number}, headers=nowhere
        )
        a_consent = await verification.get(f"/v1/consents/{consent['id']}", headers=nowhere)
        queries = await verification.post(
            "/v1/persons/queries", json={"identity_number": number}, headers=nowhere
        )
        a_batch = await verification.get(batch.headers["Location"], headers=nowhere)
        results = await verification.get(f"{batch.headers['Location']}/results", headers=nowhere)

        assert (listed.status_code, listed.json()) == (200, [])
        assert (consents.status_code, consents.json()) == (200, [])
        assert (queries.status_code, queries.json()) == (200, [])
        assert [r.status_code for r in (one, a_consent, a_batch, results)] == [404] * 4


class TestConsentsBelongToARegion:
    async def test_a_consent_recorded_in_another_region_does_not_count(
        self, verification: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        number = identity_number(serial=520)
        await consent_for(verification, auth(token, ["42"]), number, region=WUHAN)

        response = await verification.post(
            "/v1/verifications", json=inline(number), headers=auth(token, ["4113"])
        )

        assert response.status_code == 403
        assert set(response.json()["members"][0]["consent"].values()) == {"missing"}

    async def test_a_consent_naming_a_household_of_another_region_is_refused(
        self,
        verification: httpx.AsyncClient,
        registry_server: str,
        token: Callable[..., str],
    ) -> None:
        number = identity_number(region=WUHAN, serial=521)
        household_id = await file_in(registry_server, token, WUHAN, number)

        response = await verification.post(
            "/v1/consents",
            json={
                "identity_number": number,
                "region": "411302",
                "household_id": household_id,
                "signed_by": "张三明",
                "signed_on": TODAY.isoformat(),
                "expires_on": (TODAY + timedelta(days=30)).isoformat(),
                "document_ref": "越权-1",
            },
            headers=auth(token, ["4113"]),
        )

        assert response.status_code == 404
        assert response.json()["type"].endswith("/household-not-found")

    async def test_reading_and_revoking_stay_in_the_callers_regions(
        self, verification: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        number = identity_number(serial=522)
        consent = await consent_for(verification, auth(token), number)
        other = auth(token, ["4101"])

        read = await verification.get(f"/v1/consents/{consent['id']}", headers=other)
        revoked = await verification.post(
            f"/v1/consents/{consent['id']}/revoke", json={"reason": "越权"}, headers=other
        )
        found = await verification.post(
            "/v1/consents/search", json={"identity_number": number}, headers=other
        )

        assert (read.status_code, revoked.status_code, found.json()) == (404, 404, [])
        still = await verification.get(f"/v1/consents/{consent['id']}", headers=auth(token))
        assert still.json()["state"] == "valid"

    async def test_a_revocation_anywhere_wins_over_every_consent_signed_before_it(
        self, verification: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        mine, theirs = auth(token, ["4113"]), auth(token, ["42"])
        number = identity_number(serial=523)
        here = await consent_for(verification, mine, number)
        there = await consent_for(verification, theirs, number, region=WUHAN)
        revoked = await verification.post(
            f"/v1/consents/{there['id']}/revoke",
            json={"reason": "本人撤回全部授权"},
            headers=theirs,
        )
        assert revoked.status_code == 200

        refused = await verification.post("/v1/verifications", json=inline(number), headers=mine)
        shown = await verification.get(f"/v1/consents/{here['id']}", headers=mine)

        assert refused.status_code == 403
        assert set(refused.json()["members"][0]["consent"].values()) == {"revoked"}
        assert shown.json()["state"] == "revoked"

        # signed again after the revocation: it counts
        await consent_for(verification, mine, number, signed_on=date.today().isoformat())
        accepted = await verification.post("/v1/verifications", json=inline(number), headers=mine)
        assert accepted.status_code == 202, accepted.text


class TestWorkThatCannotSucceed:
    async def test_a_verification_that_raises_every_time_fails_after_its_attempts(
        self,
        make_verification: Callable[..., Any],
        sandbox: httpx.AsyncClient,
        nats_url: str,
        token: Callable[..., str],
    ) -> None:
        """Limits under a prefix that is no region make every run raise after the departments
        answered: three attempts, then `failed`, and every query made is in the query log."""
        headers = auth(token)
        number = identity_number(serial=530)
        nc = await nats.connect(nats_url)
        failures: list[dict[str, Any]] = []

        async def on_failed(message: Any) -> None:
            failures.append(json.loads(message.data)["data"])

        await nc.subscribe("bangfu.verification.verification.failed.>", cb=on_failed)
        before = await answered(sandbox)
        broken = {"4x": LIMIT}
        async with make_verification(
            asset_limits=broken, max_attempts=3, retry_seconds=0.1
        ) as client:
            await consent_for(client, headers, number)
            created = await client.post("/v1/verifications", json=inline(number), headers=headers)
            status = await wait_for(
                client, created.headers["Location"], headers, lambda b: b["status"] == "failed"
            )
            await asyncio.sleep(1.0)  # no fourth attempt comes
            looked = await client.post(
                "/v1/persons/queries", json={"identity_number": number}, headers=headers
            )
        await nc.close()

        assert "3 attempts" in status["reason"]
        assert [f["verification_id"] for f in failures] == [status["id"]]
        assert await answered(sandbox) - before == 3 * len(ALL)
        queries = [q for q in looked.json() if q["verification_id"] == status["id"]]
        assert len(queries) == 3 * len(ALL)

    async def test_a_department_asked_again_without_an_answer_is_in_the_query_log(
        self,
        make_verification: Callable[..., Any],
        sandbox: httpx.AsyncClient,
        token: Callable[..., str],
    ) -> None:
        headers = auth(token)
        number = identity_number(serial=533)
        await sandbox.put("/admin/departments/finance", json={"fault": "http_500"})
        async with make_verification(refetch_seconds=0.2) as client:
            await consent_for(client, headers, number)
            created = await client.post("/v1/verifications", json=inline(number), headers=headers)
            status = await finished(client, created.headers["Location"], headers)

            async def asked_again() -> list[dict[str, Any]]:
                looked = await client.post(
                    "/v1/persons/queries", json={"identity_number": number}, headers=headers
                )
                finance = [q for q in looked.json() if q["department"] == "finance"]
                return finance if len(finance) >= 3 else []

            finance = await eventually(asked_again, timeout=20)
            again = await client.get(created.headers["Location"], headers=headers)

        assert {q["outcome"] for q in finance} == {"unavailable"}
        assert {q["verification_id"] for q in finance} == {status["id"]}
        assert again.json()["report_version"] == 1

    async def test_a_region_without_asset_limits_gets_unknown_verdicts(
        self, make_verification: Callable[..., Any], token: Callable[..., str]
    ) -> None:
        headers = auth(token)
        number = identity_number(serial=531)
        async with make_verification(asset_limits={"13": LIMIT}, retry_seconds=0.1) as client:
            await consent_for(client, headers, number)
            created = await client.post("/v1/verifications", json=inline(number), headers=headers)
            status = await finished(client, created.headers["Location"], headers)
            report = (await report_of(client, status["id"], headers))["report"]

        assert status["status"] == "completed"
        assert set(report["asset_verdicts"].values()) == {"unknown"}

    async def test_a_purpose_of_60_chinese_characters_verifies_a_filed_household(
        self,
        verification: httpx.AsyncClient,
        registry_server: str,
        registry_settings: RegistrySettings,
        token: Callable[..., str],
    ) -> None:
        headers = auth(token)
        number = identity_number(serial=532)
        await consent_for(verification, headers, number)
        household_id = await file_in(registry_server, token, "411302", number)
        purpose = ("城乡最低生活保障家庭经济状况年度复核" * 4)[:60]

        created = await verification.post(
            "/v1/verifications",
            json={"household_id": household_id, "purpose": purpose},
            headers=headers,
        )
        batch = await verification.post(
            "/v1/batches",
            json={"region": "411302", "household_ids": [household_id], "purpose": purpose},
            headers=headers,
        )

        assert created.status_code == 202, created.text
        assert (await finished(verification, created.headers["Location"], headers))[
            "status"
        ] == "completed"
        assert batch.status_code == 202, batch.text
        done = await wait_for(
            verification, batch.headers["Location"], headers, lambda b: b["status"] != "running"
        )
        assert done["done"] == 1
        # the registry recorded why, as far as its header holds
        recorded = [p for p in await pii_reads(registry_settings, household_id) if p]
        assert any(p.startswith("核对: 城乡最低生活保障") for p in recorded)


class TestTheRegistrysPurposeHeader:
    def test_a_short_purpose_is_sent_whole(self) -> None:
        assert registry_purpose("年度复核") == "核对: 年度复核"

    def test_a_long_purpose_is_shortened_to_fit_the_header(self) -> None:
        purpose = "城乡最低生活保障家庭经济状况年度复核" * 11  # the schema's 200 characters

        sent = registry_purpose(purpose[:200])

        assert len(quote(sent)) <= REGISTRY_PURPOSE_MAX
        assert sent.endswith("…") and sent[:-1] == f"核对: {purpose}"[: len(sent) - 1]


class TestAHouseholdsConsents:
    async def test_are_listed_with_their_state_only_inside_the_callers_regions(
        self,
        verification: httpx.AsyncClient,
        registry_server: str,
        token: Callable[..., str],
    ) -> None:
        head, spouse = identity_number(serial=521), identity_number(serial=522)
        household_id = await file_in(registry_server, token, "411302", head)
        mine = auth(token, ["4113"])
        first = await consent_for(verification, mine, head, household_id=household_id)
        second = await consent_for(
            verification, mine, spouse, household_id=household_id, document_ref="宛城授权-配偶"
        )
        await consent_for(verification, mine, identity_number(serial=523))  # no household
        revoked = await verification.post(
            f"/v1/consents/{second['id']}/revoke", json={"reason": "本人撤回"}, headers=mine
        )
        assert revoked.status_code == 200, revoked.text

        def search(headers: dict[str, str]) -> Any:
            return verification.post(
                "/v1/consents/search", json={"household_id": household_id}, headers=headers
            )

        listed = await search(mine)
        elsewhere = await search(auth(token, ["4201"]))
        nowhere = await search(bearer(token("verification:request", regions=[])))
        both = await verification.post(
            "/v1/consents/search",
            json={"household_id": household_id, "identity_number": head},
            headers=mine,
        )

        assert listed.status_code == 200, listed.text
        assert [(c["id"], c["state"]) for c in listed.json()] == [
            (first["id"], "valid"),
            (second["id"], "revoked"),
        ]
        assert all(head not in json.dumps(c) and spouse not in json.dumps(c) for c in listed.json())
        assert (elsewhere.status_code, elsewhere.json()) == (200, [])
        assert (nowhere.status_code, nowhere.json()) == (200, [])
        assert both.status_code == 422
