"""The registry's first endpoint through the ASGI app, on a real database and NATS."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import timedelta
from urllib.parse import quote

import httpx
import nats
import pytest

from tests.helpers import bearer, identity_number

PROBLEM = "application/problem+json"


def household(region: str = "411302", **head: str) -> dict[str, object]:
    return {
        "region": region,
        "head": {"name": "张三明", "identity_number": identity_number(), **head},
    }


class TestApply:
    async def test_filing_a_household_stores_it_and_emits_household_applied(
        self, registry: httpx.AsyncClient, token: Callable[..., str], nats_url: str
    ) -> None:
        nc = await nats.connect(nats_url)
        sub = await nc.subscribe("bangfu.registry.household.applied.41.13.02")
        response = await registry.post(
            "/v1/households", json=household(), headers=bearer(token("registry:write"))
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["status"] == "applied"
        assert (
            body["head"]["identity_number"]
            == "411302********1234"[:6] + "********" + identity_number()[-4:]
        )
        assert response.headers["location"] == f"/v1/households/{body['id']}"
        assert response.headers["etag"] == '"1"'
        message = await sub.next_msg(timeout=5)
        event = json.loads(message.data)
        await nc.close()
        assert event["type"] == "cn.bangfu.registry.household.applied.v1"
        assert event["subject"] == body["id"]
        assert event["sequence"] == 1
        assert event["data"]["head_name_masked"] == "张*明"
        assert identity_number() not in message.data.decode()
        assert message.headers["Nats-Msg-Id"] == event["id"]

    async def test_the_caller_with_pii_read_sees_the_number_in_clear(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        created = await registry.post(
            "/v1/households", json=household(), headers=bearer(token("registry:write"))
        )
        shown = await registry.get(
            f"/v1/households/{created.json()['id']}",
            headers=bearer(token("registry:read", "pii:read")),
        )
        assert shown.json()["head"]["identity_number"] == identity_number()

    async def test_the_same_person_cannot_head_two_households(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        first = await registry.post(
            "/v1/households", json=household(), headers=bearer(token("registry:write"))
        )
        # Typed with full-width digits: still the same person.
        full_width = identity_number().translate(
            str.maketrans("0123456789", "０１２３４５６７８９")
        )
        second = await registry.post(
            "/v1/households",
            json=household(identity_number=full_width),
            headers=bearer(token("registry:write")),
        )
        assert second.status_code == 409
        assert second.headers["content-type"] == PROBLEM
        assert second.json()["household_id"] == first.json()["id"]
        assert identity_number() not in second.text

    @pytest.mark.parametrize(
        ("number", "reason"),
        [
            (identity_number()[:-1] + ("0" if identity_number()[-1] != "0" else "1"), "checksum"),
            ("41130219800230123X", "birth_date"),
            ("411302203001011230", "future_birth_date"),
            ("41130219800517123", "length"),
        ],
    )
    async def test_a_bad_identity_number_is_422_naming_the_field_and_reason(
        self, registry: httpx.AsyncClient, token: Callable[..., str], number: str, reason: str
    ) -> None:
        response = await registry.post(
            "/v1/households",
            json=household(identity_number=number),
            headers=bearer(token("registry:write")),
        )
        assert response.status_code == 422
        problem = response.json()
        assert response.headers["content-type"] == PROBLEM
        assert problem["type"].endswith("/invalid-identity-number")
        assert problem["errors"][0]["field"] == "head.identity_number"
        assert problem["errors"][0]["code"] == reason


class TestProblems:
    async def test_malformed_json_is_400(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        response = await registry.post(
            "/v1/households",
            content=b'{"region": "411302",',
            headers={**bearer(token("registry:write")), "content-type": "application/json"},
        )
        assert response.status_code == 400
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["type"].endswith("/malformed-json")

    async def test_a_missing_field_is_422_naming_it(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        response = await registry.post(
            "/v1/households",
            json={"region": "411302", "head": {"name": "李四"}},
            headers=bearer(token("registry:write")),
        )
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "head.identity_number"
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
        big = json.dumps({"region": "411302", "pad": "x" * (1024 * 1024)}).encode()
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
        response = await registry.post("/v1/households", json=household())
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.headers["content-type"] == PROBLEM

    async def test_an_expired_token_is_401(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        expired = token("registry:write", ttl=timedelta(seconds=-10))
        response = await registry.post("/v1/households", json=household(), headers=bearer(expired))
        assert response.status_code == 401
        assert "expired" in response.json()["detail"]

    async def test_a_token_signed_by_another_key_is_401(
        self, registry: httpx.AsyncClient, token: Callable[..., str], tmp_path
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
        response = await registry.post("/v1/households", json=household(), headers=bearer(forged))
        assert response.status_code == 401
        assert "not valid" in response.json()["detail"]

    async def test_a_token_without_the_scope_is_403_naming_it(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        response = await registry.post(
            "/v1/households", json=household(), headers=bearer(token("registry:read"))
        )
        assert response.status_code == 403
        assert response.json()["missing_scopes"] == ["registry:write"]

    async def test_filing_outside_the_callers_regions_is_403(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        response = await registry.post(
            "/v1/households",
            json=household(region="410105"),
            headers=bearer(token("registry:write", regions=["4113"])),
        )
        assert response.status_code == 403
        assert response.json()["type"].endswith("/region-not-allowed")

    async def test_a_household_outside_the_callers_regions_is_404_not_403(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        created = await registry.post(
            "/v1/households",
            json=household(region="410105"),
            headers=bearer(token("registry:write", regions=["4101"])),
        )
        url = f"/v1/households/{created.json()['id']}"
        inside = await registry.get(url, headers=bearer(token("registry:read", regions=["4101"])))
        outside = await registry.get(url, headers=bearer(token("registry:read", regions=["4113"])))
        assert inside.status_code == 200
        assert outside.status_code == 404
        assert outside.json()["type"].endswith("/not-found")

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


class TestOperations:
    async def test_readyz_reports_database_schema_and_nats(
        self, registry: httpx.AsyncClient
    ) -> None:
        response = await registry.get("/readyz")
        assert response.status_code == 200
        assert response.json()["checks"] == {"database": "ok", "schema": "ok", "nats": "ok"}

    async def test_metrics_count_requests_by_route(self, registry: httpx.AsyncClient) -> None:
        await registry.get("/healthz")
        await asyncio.sleep(0)
        text = (await registry.get("/metrics")).text
        assert 'bangfu_http_requests_total{method="GET",route="/healthz",status="200"} 1.0' in text
        assert "bangfu_outbox_backlog" in text


class TestAudit:
    async def test_every_unmasked_read_is_in_the_audit_log_and_masked_reads_are_not(
        self, registry: httpx.AsyncClient, token: Callable[..., str], registry_settings
    ) -> None:
        from shared import audit
        from shared.db import Database

        created = await registry.post(
            "/v1/households", json=household(), headers=bearer(token("registry:write"))
        )
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
            from sqlalchemy import select

            rows = (await session.execute(select(audit.audit_log))).mappings().all()
            assert await audit.verify(session) == []
        await db.dispose()
        assert [(r["client_id"], r["action"], r["target"], r["purpose"]) for r in rows] == [
            ("人社-7", "household.pii_read", created.json()["id"], "复核 2026年申请")
        ]
        assert rows[0]["trace_id"] and len(rows[0]["trace_id"]) == 32


class TestReadiness:
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
        assert response.json()["checks"]["nats"] == "ok"
