"""POST /v1/households:batch-get: many files in one call, confined, masked and audited exactly
as the single read GET /v1/households/{id} is."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
from sqlalchemy import select

from services.registry.settings import RegistrySettings
from shared import audit
from shared.db import Database
from shared.registry_client import BATCH_READ_MAX
from tests.helpers import bearer, household_body, identity_number

BATCH = "/v1/households:batch-get"
PROBLEM = "application/problem+json"
GHOST = "01a00000-0000-7000-8000-000000000000"  # an id nothing has
PURPOSE = "救助测算: 成员年龄"


async def _file(
    registry: httpx.AsyncClient, token: Callable[..., str], region: str, *, serial: int
) -> dict[str, Any]:
    spouse: dict[str, object] = {
        "name": "李芳",
        "relation": "spouse",
        "identity_number": identity_number(region=region, serial=serial + 1),
        "phone": "13812345678",
    }
    response = await registry.post(
        "/v1/households",
        json=household_body(
            region, head_number=identity_number(region=region, serial=serial), members=[spouse]
        ),
        headers=bearer(token("registry:write", regions=[region[:4]])),
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def _clear(token: Callable[..., str], *, regions: list[str], client_id: str) -> dict[str, str]:
    return {
        **bearer(token("registry:read", "pii:read", regions=regions, client_id=client_id)),
        "Bangfu-Purpose": quote(PURPOSE),
    }


async def _audit_rows(settings: RegistrySettings) -> list[tuple[str, str, str, str | None]]:
    url, schema = settings.database
    db = Database(url, schema=schema)
    async with db.sessionmaker() as session:
        rows = (await session.execute(select(audit.audit_log))).mappings().all()
        assert await audit.verify(session) == []
    await db.dispose()
    return [(r["client_id"], r["action"], r["target"], r["purpose"]) for r in rows]


class TestConfinement:
    async def test_a_4101_token_gets_nothing_of_4113_and_its_ids_read_as_ids_nobody_has(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        ours = await _file(registry, token, "410105", serial=101)
        theirs = await _file(registry, token, "411302", serial=201)
        for headers in (
            bearer(token("registry:read", regions=["4101"])),
            _clear(token, regions=["4101"], client_id="郑州-1"),
        ):
            answer = await registry.post(
                BATCH, json={"ids": [theirs["id"], ours["id"], GHOST]}, headers=headers
            )
            assert answer.status_code == 200, answer.text
            assert [item["id"] for item in answer.json()["items"]] == [ours["id"]]
            # The 4113 id is answered as the id nobody has: both merely not found.
            assert answer.json()["not_found"] == [theirs["id"], GHOST]
            shown = answer.text.replace(theirs["id"], "")
            assert "411302" not in shown and "4113" not in shown
            single = await registry.get(f"/v1/households/{theirs['id']}", headers=headers)
            assert single.status_code == 404
            only = await registry.post(
                BATCH, json={"ids": [theirs["id"]], "include": ["declarations"]}, headers=headers
            )
            assert only.json() == {"items": [], "not_found": [theirs["id"]], "declarations": {}}

    async def test_a_token_without_regions_reads_nothing(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        filed = await _file(registry, token, "411302", serial=301)
        answer = await registry.post(
            BATCH,
            json={"ids": [filed["id"]]},
            headers=bearer(token("registry:read", regions=[])),
        )
        assert answer.json() == {"items": [], "not_found": [filed["id"]], "declarations": None}

    async def test_registry_read_is_required(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        answer = await registry.post(
            BATCH, json={"ids": [GHOST]}, headers=bearer(token("registry:write"))
        )
        assert answer.status_code == 403
        assert answer.json()["missing_scopes"] == ["registry:read"]


class TestMasking:
    async def test_each_file_is_what_the_single_read_answers_masked_or_in_clear(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        first = await _file(registry, token, "411302", serial=401)
        second = await _file(registry, token, "411302", serial=411)
        ids = [second["id"], first["id"]]
        masked = bearer(token("registry:read"))
        clear = _clear(token, regions=["41"], client_id="benefits")
        for headers in (masked, clear):
            answer = await registry.post(BATCH, json={"ids": ids}, headers=headers)
            singles = [
                (await registry.get(f"/v1/households/{i}", headers=headers)).json() for i in ids
            ]
            assert answer.json()["items"] == singles
        items = (await registry.post(BATCH, json={"ids": ids}, headers=masked)).json()["items"]
        head = items[1]["members"][0]
        assert head["identity_number"] == "411302***********" + identity_number(serial=401)[-1]
        assert head["birth_date"] is None
        assert items[1]["members"][1]["phone"] == "138****5678"
        shown = (await registry.post(BATCH, json={"ids": ids}, headers=clear)).json()["items"]
        assert shown[1]["members"][0]["identity_number"] == identity_number(serial=401)
        assert shown[1]["members"][0]["birth_date"] == "1980-05-17"
        assert shown[1]["members"][1]["phone"] == "13812345678"

    async def test_declarations_are_those_of_each_households_own_endpoint(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        declared = await _file(registry, token, "411302", serial=501)
        bare = await _file(registry, token, "411302", serial=511)
        write = bearer(token("registry:write", "registry:read"))
        items = [
            {
                "member_id": declared["members"][0]["id"],
                "kind": "income",
                "item": "wages",
                "month": "2026-10",
                "amount_fen": 90000,
            },
            {
                "member_id": declared["members"][1]["id"],
                "kind": "asset",
                "item": "deposits",
                "amount_fen": 500000,
            },
        ]
        posted = await registry.post(
            f"/v1/households/{declared['id']}/declarations",
            json={"items": items},
            headers={**write, "If-Match": '"1"'},
        )
        assert posted.status_code == 201, posted.text
        reader = bearer(token("registry:read"))
        answer = await registry.post(
            BATCH,
            json={"ids": [declared["id"], bare["id"]], "include": ["declarations"]},
            headers=reader,
        )
        own = await registry.get(f"/v1/households/{declared['id']}/declarations", headers=reader)
        assert answer.json()["declarations"] == {declared["id"]: own.json(), bare["id"]: []}
        assert [i["amount_fen"] for i in own.json()] == [90000, 500000]


class TestAudit:
    async def test_a_clear_read_needs_a_purpose_and_is_audited_once_per_household_found(
        self,
        registry: httpx.AsyncClient,
        token: Callable[..., str],
        registry_settings: RegistrySettings,
    ) -> None:
        first = await _file(registry, token, "411302", serial=601)
        second = await _file(registry, token, "411302", serial=611)
        elsewhere = await _file(registry, token, "410105", serial=621)
        ids = [first["id"], second["id"], first["id"], elsewhere["id"], GHOST]
        clear = _clear(token, regions=["4113"], client_id="benefits")
        without_purpose = {k: v for k, v in clear.items() if k != "Bangfu-Purpose"}
        refused = await registry.post(BATCH, json={"ids": ids}, headers=without_purpose)
        assert refused.status_code == 400
        assert refused.headers["content-type"] == PROBLEM
        assert refused.json()["type"].endswith("/purpose-required")
        masked = await registry.post(
            BATCH, json={"ids": ids}, headers=bearer(token("registry:read"))
        )
        assert masked.status_code == 200
        assert await _audit_rows(registry_settings) == []  # neither refused nor masked reads
        answer = await registry.post(BATCH, json={"ids": ids}, headers=clear)
        assert [i["id"] for i in answer.json()["items"]] == [first["id"], second["id"]]
        assert answer.json()["not_found"] == [elsewhere["id"], GHOST]
        # Each household found once, the repeated id too; nothing for what was not read.
        assert await _audit_rows(registry_settings) == [
            ("benefits", "household.pii_read", first["id"], PURPOSE),
            ("benefits", "household.pii_read", second["id"], PURPOSE),
        ]


class TestLimits:
    async def test_more_ids_than_the_limit_none_or_a_malformed_one_are_422(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        reader = bearer(token("registry:read"))
        at_limit = [f"h-{n}" for n in range(BATCH_READ_MAX)]
        answer = await registry.post(BATCH, json={"ids": at_limit}, headers=reader)
        assert answer.status_code == 200
        assert answer.json()["not_found"] == at_limit
        for body, field in (
            ({"ids": [*at_limit, "h-over"]}, "ids"),
            ({"ids": []}, "ids"),
            ({"ids": ["h\u0000nul"]}, "ids.0"),
            ({"ids": [GHOST], "include": ["incomes"]}, "include.0"),
            ({"ids": [GHOST], "region": "41"}, "region"),
        ):
            refused = await registry.post(BATCH, json=body, headers=reader)
            assert refused.status_code == 422, body
            assert refused.headers["content-type"] == PROBLEM
            assert [e["field"] for e in refused.json()["errors"]] == [field], refused.json()
