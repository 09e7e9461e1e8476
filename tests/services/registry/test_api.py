"""The registry through its HTTP API, on a real database and a real NATS."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import date, timedelta
from urllib.parse import quote

import httpx
import nats
import pytest

from tests.helpers import bearer, household_body, identity_number

PROBLEM = "application/problem+json"
WRITE = ("registry:write", "registry:read")


async def file_household(
    registry: httpx.AsyncClient, token: Callable[..., str], **kwargs: object
) -> httpx.Response:
    response = await registry.post(
        "/v1/households",
        json=household_body(**kwargs),  # type: ignore[arg-type]
        headers=bearer(token(*WRITE)),
    )
    assert response.status_code == 201, response.text
    return response


class TestApply:
    async def test_filing_a_household_stores_it_and_emits_household_applied(
        self, registry: httpx.AsyncClient, token: Callable[..., str], nats_url: str
    ) -> None:
        nc = await nats.connect(nats_url)
        sub = await nc.subscribe("bangfu.registry.household.applied.41.13.02")
        spouse = {
            "name": "李芳",
            "relation": "spouse",
            "identity_number": identity_number(serial=124),
            "phone": "13812345678",
        }
        response = await registry.post(
            "/v1/households",
            json=household_body(members=[spouse]),
            headers=bearer(token("registry:write")),
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["status"] == "applied"
        assert body["allowed_steps"] == ["community_review", "reject"]
        assert [m["identity_number"] for m in body["members"]] == [
            "411302***********" + identity_number()[-1],
            "411302***********" + identity_number(serial=124)[-1],
        ]
        assert body["members"][1]["phone"] == "138****5678"
        assert body["members"][0]["birth_date"] is None  # the number's middle: pii:read only
        assert body["members"][0]["birth_year"] == 1980
        assert body["members"][0]["sex"] == "male"
        assert response.headers["location"] == f"/v1/households/{body['id']}"
        assert response.headers["etag"] == '"1"'
        message = await sub.next_msg(timeout=5)
        event = json.loads(message.data)
        await nc.close()
        assert event["type"] == "cn.bangfu.registry.household.applied.v1"
        assert event["subject"] == body["id"]
        assert event["sequence"] == 1
        assert event["data"]["head_name_masked"] == "张*明"
        assert event["data"]["member_count"] == 2
        assert identity_number() not in message.data.decode()
        assert message.headers["Nats-Msg-Id"] == event["id"]

    async def test_the_caller_with_pii_read_sees_numbers_in_clear(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        created = await file_household(registry, token)
        shown = await registry.get(
            f"/v1/households/{created.json()['id']}",
            headers={**bearer(token("registry:read", "pii:read")), "Bangfu-Purpose": "test"},
        )
        assert shown.json()["members"][0]["identity_number"] == identity_number()

    # Without a key the filing is one statement (no transaction on PostgreSQL); with one,
    # a transaction that also remembers the answer.
    @pytest.mark.parametrize("key", [None, "filing-1"], ids=["one-write", "idempotency-key"])
    async def test_one_person_cannot_be_in_two_active_households(
        self, registry: httpx.AsyncClient, token: Callable[..., str], key: str | None
    ) -> None:
        first = await file_household(registry, token)
        # The same person as a child of another household, typed with full-width digits.
        full_width = identity_number().translate(
            str.maketrans("0123456789", "０１２３４５６７８９")
        )
        keyed = {"Idempotency-Key": key} if key else {}
        second = await registry.post(
            "/v1/households",
            json=household_body(
                head_number=identity_number(serial=555),
                members=[{"name": "张三明", "relation": "child", "identity_number": full_width}],
            ),
            headers={**bearer(token("registry:write")), **keyed},
        )
        assert second.status_code == 409
        assert second.headers["content-type"] == PROBLEM
        assert second.json()["household_id"] == first.json()["id"]
        assert "411302***********" in second.json()["detail"]
        assert identity_number() not in second.text
        listed = await registry.get("/v1/households", headers=bearer(token("registry:read")))
        assert len(listed.json()["items"]) == 1  # nothing of the second was written
        # Nor its head's claim: the head files alone now.
        alone = await registry.post(
            "/v1/households",
            json=household_body(head_number=identity_number(serial=555)),
            headers=bearer(token("registry:write")),
        )
        assert alone.status_code == 201, alone.text

    async def test_a_person_filed_in_the_placeholder_region_is_named_by_that_province(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        """The unnamed city's opinion is encoded under the placeholder code 900100 (issue 14):
        a filing there is a filing like any other, and a conflict names its 'province'."""
        number = identity_number(serial=556)
        there = await registry.post(
            "/v1/households",
            json=household_body("900100", head_number=number),
            headers=bearer(token(*WRITE, regions=["90"])),
        )
        assert there.status_code == 201, there.text
        here = await registry.post(
            "/v1/households",
            json=household_body(head_number=number),
            headers=bearer(token(*WRITE, regions=["4113"])),
        )
        assert here.status_code == 409, here.text
        assert "占位地区" in here.json()["detail"]
        assert "household_id" not in here.json()

    async def test_a_rejected_household_frees_its_members_for_another_filing(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        first = (await file_household(registry, token)).json()
        rejected = await registry.post(
            f"/v1/households/{first['id']}/steps/reject",
            json={"comment": "不符合条件"},
            headers={**bearer(token("review:community")), "If-Match": '"1"'},
        )
        assert rejected.status_code == 200, rejected.text
        await file_household(registry, token)

    @pytest.mark.parametrize(
        ("number", "code"),
        [
            (identity_number()[:-1] + ("0" if identity_number()[-1] != "0" else "1"), "checksum"),
            ("41130219800230123X", "birth_date"),
            ("411302203001011230", "future_birth_date"),
            ("41130219800517123", "length"),
            ("4113021980O517123X", "characters"),
        ],
    )
    async def test_a_bad_identity_number_is_422_naming_the_field_and_reason(
        self, registry: httpx.AsyncClient, token: Callable[..., str], number: str, code: str
    ) -> None:
        response = await registry.post(
            "/v1/households",
            json=household_body(head_number=number),
            headers=bearer(token("registry:write")),
        )
        assert response.status_code == 422
        problem = response.json()
        assert response.headers["content-type"] == PROBLEM
        assert problem["type"].endswith("/invalid-identity-number")
        assert problem["errors"][0]["field"] == "members.identity_number"
        assert problem["errors"][0]["code"] == code

    @pytest.mark.parametrize("name", ["𠮷野家", "㐂", "Ann李", "  王\u3000芳  "])
    async def test_names_with_rare_characters_mixed_scripts_and_spaces_are_kept(
        self, registry: httpx.AsyncClient, token: Callable[..., str], name: str
    ) -> None:
        body = household_body()
        body["members"][0]["name"] = name  # type: ignore[index]
        response = await registry.post(
            "/v1/households", json=body, headers=bearer(token("registry:write"))
        )
        assert response.status_code == 201, response.text
        assert response.json()["members"][0]["name"] == name.strip(" \u3000")

    @pytest.mark.parametrize(("name", "status"), [("", 422), ("   ", 422), ("王" * 51, 422)])
    async def test_empty_blank_and_over_long_names_are_refused(
        self, registry: httpx.AsyncClient, token: Callable[..., str], name: str, status: int
    ) -> None:
        body = household_body()
        body["members"][0]["name"] = name  # type: ignore[index]
        response = await registry.post(
            "/v1/households", json=body, headers=bearer(token("registry:write"))
        )
        assert response.status_code == status
        assert response.json()["errors"][0]["field"].endswith("name")

    async def test_the_same_idempotency_key_replays_and_another_body_is_422(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        headers = {**bearer(token("registry:write")), "Idempotency-Key": "k-1"}
        first = await registry.post("/v1/households", json=household_body(), headers=headers)
        again = await registry.post("/v1/households", json=household_body(), headers=headers)
        other = await registry.post(
            "/v1/households",
            json=household_body(head_number=identity_number(serial=9)),
            headers=headers,
        )
        assert first.status_code == again.status_code == 201
        assert again.json() == first.json()  # the stored answer is the one given first
        assert again.headers["location"] == first.headers["location"]
        assert other.status_code == 422
        assert other.json()["type"].endswith("/idempotency-key-reused")


class TestUpdates:
    async def test_patch_needs_if_match_and_a_stale_one_is_412(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        created = (await file_household(registry, token)).json()
        url = f"/v1/households/{created['id']}"
        headers = bearer(token(*WRITE))
        missing = await registry.patch(url, json={"category": "dibao_edge"}, headers=headers)
        assert missing.status_code == 428
        assert missing.headers["content-type"] == PROBLEM
        changed = await registry.patch(
            url, json={"category": "dibao_edge"}, headers={**headers, "If-Match": '"1"'}
        )
        assert changed.status_code == 200
        assert changed.headers["etag"] == '"2"'
        stale = await registry.patch(
            url, json={"causes": ["disability"]}, headers={**headers, "If-Match": '"1"'}
        )
        assert stale.status_code == 412
        assert stale.headers["etag"] == '"2"'

    async def test_changed_causes_are_stored_with_one_history_line_and_a_stale_change_writes_none(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        created = (await file_household(registry, token)).json()  # causes: illness
        url = f"/v1/households/{created['id']}"
        headers = bearer(token(*WRITE))
        changed = await registry.patch(
            url,
            json={"causes": ["education", "disability"]},
            headers={**headers, "If-Match": '"1"'},
        )
        assert changed.status_code == 200
        assert changed.json()["causes"] == ["disability", "education"]
        stale = await registry.patch(
            url, json={"causes": ["unemployment"]}, headers={**headers, "If-Match": '"1"'}
        )
        assert stale.status_code == 412
        shown = await registry.get(url, headers=headers)
        assert shown.json()["causes"] == ["disability", "education"]
        history = (await registry.get(f"{url}/history", headers=headers)).json()
        assert [h["version"] for h in history] == [1, 2]
        assert history[1]["changes"][0]["field"] == "causes"

    async def test_two_concurrent_updates_of_the_same_version_let_exactly_one_through(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        created = (await file_household(registry, token)).json()
        url = f"/v1/households/{created['id']}"
        headers = {**bearer(token(*WRITE)), "If-Match": '"1"'}
        results = await asyncio.gather(
            registry.patch(url, json={"category": "dibao_edge"}, headers=headers),
            registry.patch(url, json={"causes": ["education"]}, headers=headers),
        )
        assert sorted(r.status_code for r in results) == [200, 412]

    @pytest.mark.parametrize("field", ["status", "version", "amount_fen", "entitlements"])
    async def test_a_patch_that_sets_status_or_an_amount_is_refused(
        self, registry: httpx.AsyncClient, token: Callable[..., str], field: str
    ) -> None:
        created = (await file_household(registry, token)).json()
        response = await registry.patch(
            f"/v1/households/{created['id']}",
            json={field: "enrolled"},
            headers={**bearer(token(*WRITE)), "If-Match": '"1"'},
        )
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == field
        shown = await registry.get(
            f"/v1/households/{created['id']}", headers=bearer(token("registry:read"))
        )
        assert shown.json()["status"] == "applied"
        assert shown.json()["version"] == 1


class Walk:
    """Drives one household through the workflow, each step with the scope it needs."""

    def __init__(
        self,
        registry: httpx.AsyncClient,
        token: Callable[..., str],
        household_id: str,
        regions: list[str] | None = None,
    ):
        self.registry, self.token, self.id = registry, token, household_id
        self.regions = regions or ["41"]
        self.etag = '"1"'

    async def step(
        self, step: str, scope: str, *, expect: int = 200, **body: object
    ) -> httpx.Response:
        response = await self.registry.post(
            f"/v1/households/{self.id}/steps/{step}",
            json=body,
            headers={**bearer(self.token(scope, regions=self.regions)), "If-Match": self.etag},
        )
        assert response.status_code == expect, response.text
        if response.status_code == 200:
            self.etag = response.headers["etag"]
        return response

    async def plan(self) -> None:
        response = await self.registry.put(
            f"/v1/households/{self.id}/plan",
            json={
                "measures": [
                    {"group": "employment", "measure": "公益性岗位", "lead_department": "人社局"}
                ]
            },
            headers={
                **bearer(self.token("registry:write", regions=self.regions)),
                "If-Match": self.etag,
            },
        )
        assert response.status_code == 200, response.text
        self.etag = response.headers["etag"]


class TestWorkflow:
    async def test_the_whole_path_with_the_right_role_at_each_step(
        self, registry: httpx.AsyncClient, token: Callable[..., str], nats_url: str
    ) -> None:
        nc = await nats.connect(nats_url)
        sub = await nc.subscribe("bangfu.registry.household.>")
        created = (await file_household(registry, token)).json()
        walk = Walk(registry, token, created["id"])
        await walk.step("community_review", "review:community", comment="情况属实")
        await walk.plan()
        await walk.step("street_review", "review:street")
        await walk.step("county_approve", "review:county")
        noticed = await walk.step("start_notice", "review:county")
        assert noticed.json()["notice_ends_on"] == (date.today() + timedelta(days=7)).isoformat()
        early = await walk.step("enroll", "review:county", expect=409)
        assert "enroll" not in early.json()["allowed_steps"]
        received = []
        while True:
            try:
                received.append(json.loads((await sub.next_msg(timeout=1)).data))
            except nats.errors.TimeoutError:
                break
        await nc.close()
        assert [(e["type"].split(".")[-2], e["sequence"]) for e in received] == [
            ("applied", 1),
            ("reviewed", 2),
            ("changed", 3),
            ("reviewed", 4),
            ("approved", 5),
            ("noticed", 6),
        ]
        history = (
            await registry.get(
                f"/v1/households/{created['id']}/history", headers=bearer(token("registry:read"))
            )
        ).json()
        assert [h["version"] for h in history] == [1, 2, 3, 4, 5, 6]
        assert history[1]["changes"] == [
            {"field": "status", "old": "applied", "new": "community_reviewed"}
        ]
        assert history[1]["comment"] == "情况属实"

    @pytest.mark.parametrize(
        ("step", "wrong_scope"),
        [
            ("community_review", "review:street"),
            ("county_approve", "review:community"),
        ],
    )
    async def test_a_step_with_the_wrong_role_is_403(
        self, registry: httpx.AsyncClient, token: Callable[..., str], step: str, wrong_scope: str
    ) -> None:
        created = (await file_household(registry, token)).json()
        response = await Walk(registry, token, created["id"]).step(step, wrong_scope, expect=403)
        assert response.json()["missing_scopes"]

    async def test_a_step_outside_the_callers_region_is_404(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        created = (await file_household(registry, token)).json()
        await Walk(registry, token, created["id"], regions=["4101"]).step(
            "community_review", "review:community", expect=404
        )

    async def test_a_step_not_allowed_now_is_409_listing_the_allowed_ones(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        created = (await file_household(registry, token)).json()
        response = await Walk(registry, token, created["id"]).step(
            "county_approve", "review:county", expect=409
        )
        assert response.json()["allowed_steps"] == ["community_review", "reject"]
        assert response.json()["current_status"] == "applied"

    async def test_an_employer_department_file_enters_at_county_review(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        created = (
            await file_household(registry, token, channel="employer", submitted_by="市商务局")
        ).json()
        assert created["allowed_steps"] == ["county_approve", "reject"]
        await Walk(registry, token, created["id"]).step("county_approve", "review:county")

    async def test_an_objection_during_notice_returns_the_file_to_county_review(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        created = (
            await file_household(registry, token, channel="sector", submitted_by="工会")
        ).json()
        walk = Walk(registry, token, created["id"])
        await walk.step("county_approve", "review:county")
        await walk.step("start_notice", "review:county")
        notice = await registry.get("/v1/notices/411302", headers=bearer(token("registry:read")))
        assert [n["head_name"] for n in notice.json()["noticed"]] == ["张*明"]
        objected = await walk.step("object", "registry:write", comment="家中有经营性车辆")
        assert objected.json()["status"] == "county_approved"
        notice = await registry.get("/v1/notices/4113", headers=bearer(token("registry:read")))
        assert notice.json()["noticed"] == []
        assert notice.json()["open_objections"] == [
            {"household_id": created["id"], "objections": ["家中有经营性车辆"]}
        ]

    async def test_reject_needs_a_reason_and_reapply_opens_the_file_again(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        created = (await file_household(registry, token)).json()
        walk = Walk(registry, token, created["id"])
        no_reason = await walk.step("reject", "review:community", expect=422)
        assert no_reason.json()["errors"][0]["field"] == "comment"
        rejected = await walk.step("reject", "review:community", comment="收入超标")
        assert rejected.json()["rejection_reason"] == "收入超标"
        assert rejected.json()["allowed_steps"] == ["reapply"]
        reopened = await walk.step("reapply", "registry:write")
        assert reopened.json()["status"] == "applied"


class TestProblems:
    async def test_malformed_json_is_400(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        response = await registry.post(
            "/v1/households",
            content=b'{"location": {',
            headers={**bearer(token("registry:write")), "content-type": "application/json"},
        )
        assert response.status_code == 400
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["type"].endswith("/malformed-json")

    async def test_a_missing_field_is_422_naming_it(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        body = household_body()
        del body["members"][0]["identity_number"]  # type: ignore[attr-defined,index]
        response = await registry.post(
            "/v1/households", json=body, headers=bearer(token("registry:write"))
        )
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "members.0.identity_number"
        assert response.json()["errors"][0]["reason"] == "Field required"

    async def test_a_body_that_is_not_json_is_415(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        response = await registry.post(
            "/v1/households",
            content=b"region=411302",
            headers={
                **bearer(token("registry:write")),
                "content-type": "application/x-www-form-urlencoded",
            },
        )
        assert response.status_code == 415
        assert response.headers["content-type"] == PROBLEM

    async def test_a_body_over_the_limit_is_413_whether_declared_or_streamed(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        big = json.dumps({"pad": "x" * (1024 * 1024)}).encode()
        headers = {**bearer(token("registry:write")), "content-type": "application/json"}
        declared = await registry.post("/v1/households", content=big, headers=headers)
        assert declared.status_code == 413
        assert declared.headers["content-type"] == PROBLEM

        async def chunks():  # type: ignore[no-untyped-def]
            for start in range(0, len(big), 65536):
                yield big[start : start + 65536]

        streamed = await registry.post("/v1/households", content=chunks(), headers=headers)
        assert streamed.status_code == 413
        assert streamed.json()["type"].endswith("/content-too-large")

    async def test_a_wrong_method_is_405_and_an_unknown_path_404(
        self, registry: httpx.AsyncClient
    ) -> None:
        assert (await registry.delete("/v1/households")).status_code == 405
        missing = await registry.get("/v1/nothing-here")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == PROBLEM


class TestAuth:
    async def test_no_token_is_401_with_a_bearer_challenge(
        self, registry: httpx.AsyncClient
    ) -> None:
        response = await registry.post("/v1/households", json=household_body())
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.headers["content-type"] == PROBLEM

    async def test_an_expired_token_is_401(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        expired = token("registry:write", ttl=timedelta(seconds=-10))
        response = await registry.post(
            "/v1/households", json=household_body(), headers=bearer(expired)
        )
        assert response.status_code == 401
        assert "expired" in response.json()["detail"]

    async def test_a_token_signed_by_another_key_is_401(
        self,
        registry: httpx.AsyncClient,
        tmp_path,  # type: ignore[no-untyped-def]
    ) -> None:
        from shared.auth import ensure_signing_key, issue_token

        ensure_signing_key(tmp_path / "other.pem", tmp_path / "other.pub")
        forged = issue_token(
            (tmp_path / "other.pem").read_bytes(),
            client_id="mallory",
            scopes=["registry:write"],
            regions=["41"],
            issuer="bangfu-dev",
            audience="bangfu",
        )
        response = await registry.post(
            "/v1/households", json=household_body(), headers=bearer(forged)
        )
        assert response.status_code == 401
        assert "not valid" in response.json()["detail"]

    async def test_a_token_without_the_scope_is_403_naming_it(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        response = await registry.post(
            "/v1/households", json=household_body(), headers=bearer(token("registry:read"))
        )
        assert response.status_code == 403
        assert response.json()["missing_scopes"] == ["registry:write"]

    async def test_filing_outside_the_callers_regions_is_403(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        response = await registry.post(
            "/v1/households",
            json=household_body(region="410105"),
            headers=bearer(token("registry:write", regions=["4113"])),
        )
        assert response.status_code == 403
        assert response.json()["type"].endswith("/region-not-allowed")

    async def test_a_household_outside_the_callers_regions_is_404_everywhere(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        created = await registry.post(
            "/v1/households",
            json=household_body(region="410105"),
            headers=bearer(token("registry:write", regions=["4101"])),
        )
        hid = created.json()["id"]
        inside = bearer(token("registry:read", regions=["4101"]))
        outside = bearer(token("registry:read", "registry:write", regions=["4113"]))
        assert (await registry.get(f"/v1/households/{hid}", headers=inside)).status_code == 200
        for path in ("", "/history", "/visits", "/incomes"):
            response = await registry.get(f"/v1/households/{hid}{path}", headers=outside)
            assert response.status_code == 404, path
        patched = await registry.patch(
            f"/v1/households/{hid}",
            json={"category": "dibao"},
            headers={**outside, "If-Match": '"1"'},
        )
        assert patched.status_code == 404
        listed = await registry.get("/v1/households", headers=outside)
        assert listed.json()["items"] == []
        stats = await registry.get("/v1/statistics", headers=outside)
        assert stats.json()["counts"] == []

    async def test_a_client_over_its_rate_is_429_with_retry_after(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        from shared.auth import RateLimiter

        registry._transport.app.state.rate_limiter = RateLimiter(rate=2)  # type: ignore[attr-defined]
        headers = bearer(token("registry:read"))
        statuses = [
            (await registry.get("/v1/households/x", headers=headers)).status_code for _ in range(6)
        ]
        assert statuses[:4] == [404] * 4
        assert statuses[-1] == 429


class TestAudit:
    async def test_every_unmasked_read_is_in_the_audit_log_and_masked_reads_are_not(
        self, registry: httpx.AsyncClient, token: Callable[..., str], registry_settings
    ) -> None:
        from sqlalchemy import select

        from shared import audit
        from shared.db import Database

        created = await file_household(registry, token)
        url = f"/v1/households/{created.json()['id']}"
        await registry.get(url, headers=bearer(token("registry:read", client_id="民政-1")))
        await registry.get(
            url,
            headers={
                **bearer(token("registry:read", "pii:read", client_id="人社-7")),
                "Bangfu-Purpose": quote("复核 2026年申请"),
            },
        )
        url_, schema = registry_settings.database
        db = Database(url_, schema=schema)
        async with db.sessionmaker() as session:
            rows = (await session.execute(select(audit.audit_log))).mappings().all()
            assert await audit.verify(session) == []
        await db.dispose()
        assert [(r["client_id"], r["action"], r["target"], r["purpose"]) for r in rows] == [
            ("人社-7", "household.pii_read", created.json()["id"], "复核 2026年申请")
        ]
        assert rows[0]["trace_id"] and len(rows[0]["trace_id"]) == 32


class TestOperations:
    async def test_readyz_reports_database_schema_and_nats(
        self, registry: httpx.AsyncClient
    ) -> None:
        response = await registry.get("/readyz")
        assert response.status_code == 200
        assert response.json()["checks"] == {
            "database": "ok",
            "schema": "ok",
            "nats": "ok",
            "consumer registry-dci-notify": "ok",
            "consumer registry-entitlements-determined": "ok",
            "consumer registry-exit-eligible": "ok",
            "consumer registry-verification-completed": "ok",
        }

    async def test_metrics_count_requests_by_route(self, registry: httpx.AsyncClient) -> None:
        await registry.get("/healthz")
        text = (await registry.get("/metrics")).text
        assert 'bangfu_http_requests_total{method="GET",route="/healthz",status="200"} 1.0' in text
        assert "bangfu_outbox_backlog" in text

    async def test_readyz_is_503_until_the_schema_is_migrated(
        self,
        suite,
        tmp_path,  # type: ignore[no-untyped-def]
    ) -> None:
        from services.registry.app import create_app
        from services.registry.settings import RegistrySettings
        from tests.conftest import running

        settings = RegistrySettings(
            suite=suite, database_url=f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
        )
        async with running(create_app(settings)) as client:
            response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["checks"]["schema"].startswith("not at head")


class TestCryptoProfiles:
    async def test_the_gm_profile_stores_sm4_ciphertexts_and_reads_them_back(
        self,
        registry_settings,
        token: Callable[..., str],  # type: ignore[no-untyped-def]
    ) -> None:
        from sqlalchemy import select

        from services.registry.app import create_app
        from services.registry.store import member
        from shared.db import Database
        from tests.conftest import running

        suite = registry_settings.suite.model_copy(update={"crypto_profile": "gm"})
        settings = registry_settings.model_copy(update={"suite": suite})
        async with running(create_app(settings)) as registry:
            created = await file_household(registry, token)
            shown = await registry.get(
                f"/v1/households/{created.json()['id']}",
                headers={**bearer(token("registry:read", "pii:read")), "Bangfu-Purpose": "test"},
            )
        assert shown.json()["members"][0]["identity_number"] == identity_number()
        url, schema = settings.database
        db = Database(url, schema=schema)
        async with db.sessionmaker() as session:
            stored = (await session.execute(select(member.c.identity_cipher))).scalar_one()
        await db.dispose()
        assert stored.startswith("v1.gm.")
        assert identity_number() not in stored


async def test_the_filing_documents_its_idempotency_key_once(registry: httpx.AsyncClient) -> None:
    """The key is read twice (the unit of work it picks, the replay), and documented once."""
    filing = (await registry.get("/openapi.json")).json()["paths"]["/v1/households"]["post"]
    headers = [p for p in filing["parameters"] if p["in"] == "header"]
    assert [(p["name"], p.get("description")) for p in headers] == [
        ("Idempotency-Key", "Retry safely: the same key replays the answer")
    ]
