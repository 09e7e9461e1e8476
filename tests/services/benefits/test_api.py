"""The benefits API through the app, on a real database (SQLite or PostgreSQL) and NATS."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import TypeAdapter
from sqlalchemy import select

from services.benefits.app import create_app
from services.benefits.domain.events import EVENT_TYPES
from services.benefits.domain.parameters import ParameterError
from services.benefits.settings import BenefitsSettings
from shared.db import Database
from shared.events.outbox import outbox
from tests.helpers import bearer

READ, ADMIN = "benefits:read", "benefits:admin"


def body(**overrides: Any) -> dict[str, Any]:
    """四口之家 in 宛城区, declared income 1650.50元 a month."""
    return {
        "region": "411302",
        "declared_income_fen": 165050,
        "members": [
            {"birth_date": "1980-01-01"},
            {"birth_date": "1982-01-01", "medical_self_paid_fen": 3_000_000},
            {
                "birth_date": "2012-03-01",
                "schooling": [{"stage": "junior_high", "start": "2024-09-01", "boarding": True}],
            },
            {"birth_date": "1955-01-01"},
        ],
        **overrides,
    }


async def events(settings: BenefitsSettings) -> list[tuple[str, dict[str, Any]]]:
    url, schema = settings.database
    db = Database(url, schema=schema)
    async with db.engine.connect() as connection:
        rows = (
            (await connection.execute(select(outbox).order_by(outbox.c.position))).mappings().all()
        )
    await db.dispose()
    return [(r["nats_subject"], json.loads(r["body"])) for r in rows]


class TestCards:
    async def test_a_card_for_inline_inputs_lists_every_measure_with_its_clause(
        self, benefits: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        response = await benefits.post(
            "/v1/cards",
            json={"household": body(), "on": "2025-03-01"},
            headers=bearer(token(READ, regions=["4113"])),
        )
        assert response.status_code == 200, response.text
        card = response.json()
        amounts = {m["code"]: (m["amount_fen"], m["quantity"]) for m in card["measures"]}
        assert amounts == {
            "dibao_allowance": (87000, 4),
            "free_electricity": (0, 10),
            "compulsory_grant": (125000, 1),
            "medical_tilt": (1_000_000, 1),
            "accident_insurance": (12000, 4),
            "health_check": (0, 1),
            "home_adaptation": (300000, 1),
            "medical_premium": (0, 4),  # owed, 金额按当地标准: no amount, nothing in the sums
        }
        premium = next(m for m in card["measures"] if m["code"] == "medical_premium")
        assert (premium["amount_note"], premium["department"]) == ("金额按当地标准", "医保局")
        assert card["monthly_fen"] == 87000
        assert card["income_source"] == "declared"
        compulsory = next(m for m in card["measures"] if m["code"] == "compulsory_grant")
        assert compulsory["clause"].endswith("四(三)3(1)②")
        assert compulsory["department"] == "教育局"
        assert card["decision_id"]

    async def test_money_is_integer_fen_in_the_api(
        self, benefits: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        response = await benefits.post(
            "/v1/cards",
            json={"household": body(declared_income_fen=1650.5)},
            headers=bearer(token(READ)),
        )
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "household.declared_income_fen"

    async def test_amounts_beyond_any_household_are_refused_not_overflowed(
        self, benefits: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        response = await benefits.post(
            "/v1/cards",
            json={"household": body(declared_income_fen=10**19)},
            headers=bearer(token(READ)),
        )
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "household.declared_income_fen"

    async def test_a_region_outside_the_token_is_not_found(
        self, benefits: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        response = await benefits.post(
            "/v1/cards", json={"household": body()}, headers=bearer(token(READ, regions=["4107"]))
        )
        assert response.status_code == 404
        assert response.json()["type"].endswith("/not-found")
        assert "411302" not in response.text

    async def test_eligibility_says_why_not(
        self, benefits: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        response = await benefits.post(
            "/v1/eligibility",
            json={"household": body(declared_income_fen=400000), "on": "2025-03-01"},
            headers=bearer(token(READ)),
        )
        decisions = {d["category"]: d for d in response.json()["eligibility"]}
        assert decisions["dibao"]["applies"] is False
        assert decisions["dibao"]["reason"].startswith("家庭人均收入1000.00元不低于城市低保标准")


class TestHeldHouseholds:
    async def test_a_measure_owed_without_an_amount_is_published_as_such(
        self,
        benefits: httpx.AsyncClient,
        token: Callable[..., str],
        benefits_settings: BenefitsSettings,
    ) -> None:
        """amount_fen 0 of 特困供养 is not 0 yuan: the event says the amount is set locally."""
        put = await benefits.put(
            "/v1/households/h-tekun",
            json={"household": body(tekun_certified=True)},
            headers=bearer(token(READ, ADMIN)),
        )
        assert put.status_code == 200, put.text
        [determined] = [
            e["data"]
            for _, e in await events(benefits_settings)
            if e["type"] == "cn.bangfu.benefits.entitlements.determined.v1"
        ]
        tekun = next(m for m in determined["measures"] if m["code"] == "tekun_support")
        assert (tekun["amount_fen"], tekun["amount_note"], tekun["department"]) == (
            0,
            "金额按当地标准",
            "民政局",
        )
        allowance = next(m for m in determined["measures"] if m["code"] == "dibao_allowance")
        assert allowance["amount_note"] == ""

    async def test_new_inputs_replace_the_held_ones_and_change_the_card(
        self,
        benefits: httpx.AsyncClient,
        token: Callable[..., str],
        benefits_settings: BenefitsSettings,
    ) -> None:
        headers = bearer(token(READ, ADMIN))
        for fen in (100000, 100000, 200000):
            put = await benefits.put(
                "/v1/households/h-again",
                json={"household": body(declared_income_fen=fen)},
                headers=headers,
            )
            assert put.json()["monthly_fen"] == 63000 * 4 - fen
        types = [e["type"] for _, e in await events(benefits_settings)]
        assert types.count("cn.bangfu.benefits.entitlements.determined.v1") == 1
        assert types.count("cn.bangfu.benefits.entitlements.changed.v1") == 1  # not the repeat
        card = await benefits.get("/v1/households/h-again/card", headers=headers)
        assert card.json()["income_fen"] == 200000


class TestReceipts:
    async def test_a_decision_is_re_derived_exactly_from_its_receipt(
        self, benefits: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        headers = bearer(token(READ, ADMIN))
        card = (
            await benefits.post(
                "/v1/cards", json={"household": body(), "on": "2025-03-01"}, headers=headers
            )
        ).json()
        # The standard changes afterwards: the receipt still re-derives the old decision.
        added = await benefits.post(
            "/v1/parameters/411300/dibao.standard_fen",
            json={
                "value": 70000,
                "effective_from": "2025-01-01",
                "source": "《调标通知》",
                "clause": "一",
            },
            headers=headers,
        )
        assert added.status_code == 201, added.text
        receipt = await benefits.get(f"/v1/decisions/{card['decision_id']}", headers=headers)
        stored = receipt.json()
        assert stored["engine_version"] and stored["parameter_digest"] == card["parameter_digest"]
        assert set(stored["rule_digests"]) >= {"categories", "dibao_allowance"}
        again = await benefits.post(
            f"/v1/decisions/{card['decision_id']}/rederive", headers=headers
        )
        assert again.json()["matches"] is True
        assert again.json()["parameter_digest_matches"] is True
        assert again.json()["rules_changed_since"] == []
        fresh = await benefits.post(
            "/v1/cards", json={"household": body(), "on": "2025-03-01"}, headers=headers
        )
        allowance = next(m for m in fresh.json()["measures"] if m["code"] == "dibao_allowance")
        assert allowance["amount_fen"] == 70000 * 4 - 165050 + 50  # rounded up to the yuan


class TestParametersAndRecomputation:
    async def test_adding_a_value_recomputes_and_publishes_only_changed_cards(
        self,
        benefits: httpx.AsyncClient,
        token: Callable[..., str],
        benefits_settings: BenefitsSettings,
    ) -> None:
        headers = bearer(token(READ, ADMIN))
        poor = body(declared_income_fen=100000)
        rich = body(declared_income_fen=900000, members=[{"birth_date": "1990-01-01"}])
        for household_id, inputs in (("h-poor", poor), ("h-rich", rich)):
            put = await benefits.put(
                f"/v1/households/{household_id}", json={"household": inputs}, headers=headers
            )
            assert put.status_code == 200, put.text
        first = await events(benefits_settings)
        assert [s for s, _ in first] == [
            "bangfu.benefits.eligibility.determined.41.13.02",
            "bangfu.benefits.entitlements.determined.41.13.02",
        ] * 2
        added = await benefits.post(
            "/v1/parameters/411300/dibao.standard_fen",
            json={
                "value": 66000,
                "effective_from": "2020-01-01",
                "source": "《调标通知》",
                "document": "宛民〔2026〕1号",
                "clause": "一",
            },
            headers=headers,
        )
        assert added.json()["recomputed"] == 2 and added.json()["changed"] == 1
        later = (await events(benefits_settings))[len(first) :]
        assert [s for s, _ in later] == [
            "bangfu.benefits.eligibility.determined.41.13.02",
            "bangfu.benefits.entitlements.changed.41.13.02",
        ]
        changed = later[1][1]["data"]
        assert changed["household_id"] == "h-poor"
        assert changed["monthly_fen"] == 66000 * 4 - 100000
        history = await benefits.get("/v1/parameters/411300/dibao.standard_fen", headers=headers)
        assert [v["value"] for v in history.json()["added"]] == [66000]
        assert [v["value"] for v in history.json()["shipped"]] == [60000, 63000]
        assert [v["value"] for v in history.json()["in_force"]] == [66000]

    async def test_a_contradictory_value_is_refused_with_key_and_reason(
        self, benefits: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        response = await benefits.post(
            "/v1/parameters/411300/edge.multiple_permille",
            json={"value": 900, "effective_from": "2026-01-01", "source": "《x》", "clause": "一"},
            headers=bearer(token(ADMIN)),
        )
        assert response.status_code == 422
        assert response.json()["errors"] == [
            {
                "field": "edge.multiple_permille",
                "reason": "900‰ is below the 低保标准 itself (1000‰)",
                "code": "invalid",
            }
        ]

    async def test_admin_needs_its_scope(
        self, benefits: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        response = await benefits.post(
            "/v1/parameters/411300/dibao.standard_fen",
            json={"value": 1, "effective_from": "2026-01-01", "source": "《x》", "clause": "一"},
            headers=bearer(token(READ)),
        )
        assert response.status_code == 403

    async def test_the_parameters_in_force_name_their_level(
        self, benefits: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        response = await benefits.get(
            "/v1/parameters/411321", params={"on": "2024-06-01"}, headers=bearer(token(READ))
        )
        values = {v["key"]: v for v in response.json()["values"]}
        assert (values["dibao.standard_fen"]["value"], values["dibao.standard_fen"]["region"]) == (
            60000,
            "411321",
        )
        assert values["education.primary_boarder_fen_per_year"]["region"] == "411300"


class TestLedger:
    async def test_the_same_need_paid_twice_for_a_period_is_reported(
        self,
        benefits: httpx.AsyncClient,
        token: Callable[..., str],
        benefits_settings: BenefitsSettings,
    ) -> None:
        headers = bearer(token(READ, ADMIN))

        async def pay(department: str, period: str, reference: str) -> dict[str, Any]:
            response = await benefits.post(
                "/v1/ledger/payments",
                json={
                    "department": department,
                    "measure": "temporary_relief",
                    "household_id": "h1",
                    "region": "411302",
                    "period": period,
                    "amount_fen": 50000,
                    "reference": reference,
                },
                headers=headers,
            )
            assert response.status_code == 201, response.text
            result: dict[str, Any] = response.json()
            return result

        assert (await pay("民政局", "2025-03", "mz-1"))["duplicates"] == []
        assert (await pay("民政局", "2025-03", "mz-1"))["duplicates"] == []  # re-sent
        assert (await pay("民政局", "2025-04", "mz-2"))["duplicates"] == []
        union = await pay("总工会", "2025", "gh-1")
        assert len(union["duplicates"]) == 2
        found = await benefits.get(
            "/v1/ledger/duplicates", params={"region": "4113"}, headers=headers
        )
        assert [d["payment_id"] for d in found.json()] == [union["payment"]["id"]] * 2
        subjects = [s for s, _ in await events(benefits_settings)]
        assert subjects == ["bangfu.benefits.duplicate.detected.41.13.02"] * 2


class TestStartUp:
    def test_a_malformed_parameter_file_stops_the_app_naming_file_key_and_reason(
        self, tmp_path: Path, benefits_settings: BenefitsSettings
    ) -> None:
        (tmp_path / "411300.yaml").write_text(
            'region: "411300"\nsources: {s: {title: x}}\nvalues:\n'
            "  dibao.standard_fen: [{value: -5, from: 2024-01-01, source: s, clause: x}]\n",
            encoding="utf-8",
        )
        with pytest.raises(ParameterError) as caught:
            create_app(benefits_settings.model_copy(update={"parameters_dir": tmp_path}))
        assert (
            str(caught.value) == "411300.yaml: dibao.standard_fen[0]: must not be negative, not -5"
        )


class TestWhatIfApi:
    async def test_a_proposed_standard_is_priced_over_the_held_households(
        self, benefits: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        headers = bearer(token(READ, ADMIN, regions=["4113"]))
        for household_id, fen in (("w1", 0), ("w2", 65000)):
            inputs = body(declared_income_fen=fen, members=[{"birth_date": "1990-01-01"}])
            await benefits.put(
                f"/v1/households/{household_id}", json={"household": inputs}, headers=headers
            )
        response = await benefits.post(
            "/v1/what-if",
            json={
                "region": "411300",
                "value": 70000,
                "effective_from": "2026-01-01",
                "until": "2026-03-31",
            },
            headers=headers,
        )
        assert response.status_code == 200, response.text
        got = response.json()
        assert got["households"] == 2 and got["entering"]["dibao"] == 1
        assert (got["monthly_delta_fen"], got["backpay_fen"]) == (12000, 36000)
        held = await benefits.get("/v1/households/w2/card", headers=headers)
        assert held.json()["monthly_fen"] == 0  # a what-if changes nothing


class TestEventSchemas:
    async def test_every_event_type_is_served_and_what_is_emitted_conforms(
        self,
        benefits: httpx.AsyncClient,
        token: Callable[..., str],
        benefits_settings: BenefitsSettings,
    ) -> None:
        schemas = (await benefits.get("/v1/events/schemas")).json()
        assert sorted(schemas) == sorted(
            f"cn.bangfu.benefits.{cls.aggregate}.{cls.name}.v1" for cls in EVENT_TYPES
        )
        one = await benefits.get("/v1/events/schemas/cn.bangfu.benefits.exit.eligible.v1.json")
        assert one.json()["required"] == [
            "household_id",
            "months_above",
            "required",
            "latest_month",
        ]
        headers = bearer(token(READ, ADMIN))
        await benefits.put("/v1/households/s1", json={"household": body()}, headers=headers)
        emitted = await events(benefits_settings)
        by_type = {f"cn.bangfu.benefits.{c.aggregate}.{c.name}.v1": c for c in EVENT_TYPES}
        for _, envelope in emitted:
            cls = by_type[envelope["type"]]
            TypeAdapter(cls).validate_json(json.dumps(envelope["data"]), strict=True)
            assert envelope["dataschema"].endswith(envelope["type"] + ".json")
        assert len(emitted) == 2

    async def test_the_asyncapi_document_has_a_channel_per_event_type(
        self, benefits: httpx.AsyncClient
    ) -> None:
        document = (await benefits.get("/v1/events/asyncapi.json")).json()
        assert sorted(c["address"] for c in document["channels"].values()) == sorted(
            f"bangfu.benefits.{c.aggregate}.{c.name}.{{province}}.{{city}}.{{county}}"
            for c in EVENT_TYPES
        )
        assert "ExitEligibleData" in document["components"]["schemas"]


class TestIdempotency:
    async def test_a_retried_payment_with_its_key_is_posted_once(
        self,
        benefits: httpx.AsyncClient,
        token: Callable[..., str],
        benefits_settings: BenefitsSettings,
    ) -> None:
        headers = {**bearer(token(ADMIN)), "Idempotency-Key": "pay-1"}
        payment = {
            "department": "民政局",
            "measure": "temporary_relief",
            "household_id": "h9",
            "region": "411302",
            "period": "2025-03",
            "amount_fen": 50000,
        }
        first = await benefits.post("/v1/ledger/payments", json=payment, headers=headers)
        again = await benefits.post("/v1/ledger/payments", json=payment, headers=headers)
        assert first.status_code == again.status_code == 201
        assert first.json() == again.json()
        other = await benefits.post(
            "/v1/ledger/payments", json={**payment, "amount_fen": 1}, headers=headers
        )
        assert other.status_code == 422
        assert other.json()["type"].endswith("idempotency-key-reused")
        assert await events(benefits_settings) == []  # no second payment, no duplicate

    async def test_a_token_of_another_region_replays_no_payment(
        self, benefits: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        """The replay runs no region check: it answers only a token with the first one's powers."""
        payment = {
            "department": "民政局",
            "measure": "temporary_relief",
            "household_id": "h9",
            "region": "411302",
            "period": "2025-03",
            "amount_fen": 50000,
        }
        ours = {**bearer(token(ADMIN, regions=["4113"])), "Idempotency-Key": "pay-1"}
        first = await benefits.post("/v1/ledger/payments", json=payment, headers=ours)
        assert first.status_code == 201, first.text
        theirs = {**bearer(token(ADMIN, regions=["13"])), "Idempotency-Key": "pay-1"}
        replayed = await benefits.post("/v1/ledger/payments", json=payment, headers=theirs)
        assert replayed.status_code == 422, replayed.text
        assert replayed.json()["type"].endswith("idempotency-key-reused")
        assert "h9" not in replayed.text and "50000" not in replayed.text
