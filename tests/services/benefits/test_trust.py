"""Confinement, route by route: what a token of another region (or of no region) gets.

Everything of region 13 is set up with a token of 13; the same requests with a token of 4113,
and with an empty `regions` claim, must find nothing and change nothing. The walk is built
from the app's own routes, so a new route without a case here fails before anyone reviews it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import nats
import pytest
from sqlalchemy import func, select

from services.benefits import store
from services.benefits.app import create_app
from services.benefits.settings import BenefitsSettings
from services.registry.settings import RegistrySettings
from shared import audit
from shared.db import Database
from shared.events.envelope import new_event
from tests.conftest import running
from tests.helpers import bearer
from tests.services.benefits.test_consumers import eventually, publish
from tests.services.registry.test_api import file_household

SCOPES = ("benefits:read", "benefits:admin")
THEIRS, OURS = "130302", "411302"

# Routes that hold nothing of any region, each with its reason.
OPEN = {
    ("GET", "/healthz"): "liveness, for the orchestrator",
    ("GET", "/readyz"): "readiness, for the orchestrator",
    ("GET", "/v1/events/schemas"): "the published schemas of the service's events",
    ("GET", "/v1/events/schemas/{type_}"): "one published event schema",
    ("GET", "/v1/events/asyncapi.json"): "the published AsyncAPI document",
}


def inputs(region: str, **overrides: Any) -> dict[str, Any]:
    """A one-person household with no income: it gets 低保 wherever it lives."""
    return {
        "region": region,
        "declared_income_fen": 0,
        "members": [{"birth_date": "1960-01-01"}],
        **overrides,
    }


def payment(region: str, **overrides: Any) -> dict[str, Any]:
    return {
        "department": "民政局",
        "measure": "temporary_relief",
        "household_id": "paid-1",
        "region": region,
        "period": "2025-03",
        "amount_fen": 50000,
        "reference": "mz-1",
        **overrides,
    }


@dataclass
class Theirs:
    """What region 13 holds: a household, one of its decisions, a duplicate payment."""

    household_id: str
    decision_id: str


async def file_theirs(benefits: httpx.AsyncClient, token: Callable[..., str]) -> Theirs:
    headers = bearer(token(*SCOPES, regions=["13"]))
    put = await benefits.put(
        "/v1/households/h13", json={"household": inputs(THEIRS)}, headers=headers
    )
    assert put.status_code == 200, put.text
    for department, reference in (("民政局", "mz-1"), ("总工会", "gh-1")):
        paid = await benefits.post(
            "/v1/ledger/payments",
            json=payment(THEIRS, household_id="h13", department=department, reference=reference),
            headers=headers,
        )
        assert paid.status_code == 201, paid.text
    return Theirs(household_id="h13", decision_id=put.json()["decision_id"])


@dataclass
class Case:
    method: str
    path: str
    json: dict[str, Any] | None = None
    params: dict[str, str] | None = None
    empty_list: bool = False  # a list answers 200 and [] instead of 404


def cases(theirs: Theirs) -> dict[tuple[str, str], list[Case]]:
    """For each route, the requests that reach into region 13."""
    h, d = theirs.household_id, theirs.decision_id
    return {
        ("POST", "/v1/cards"): [
            Case("POST", "/v1/cards", {"household": inputs(THEIRS)}),
            Case("POST", "/v1/cards", {"household": inputs(OURS, household_id=h)}),
        ],
        ("POST", "/v1/eligibility"): [
            Case("POST", "/v1/eligibility", {"household": inputs(THEIRS)}),
            Case("POST", "/v1/eligibility", {"household": inputs(OURS, household_id=h)}),
        ],
        ("PUT", "/v1/households/{household_id}"): [
            Case("PUT", f"/v1/households/{h}", {"household": inputs(OURS)}),
            Case("PUT", "/v1/households/new-1", {"household": inputs(THEIRS)}),
        ],
        ("GET", "/v1/households/{household_id}/card"): [Case("GET", f"/v1/households/{h}/card")],
        ("GET", "/v1/households/{household_id}/eligibility"): [
            Case("GET", f"/v1/households/{h}/eligibility")
        ],
        ("GET", "/v1/households/{household_id}/exit"): [Case("GET", f"/v1/households/{h}/exit")],
        ("GET", "/v1/decisions/{decision_id}"): [Case("GET", f"/v1/decisions/{d}")],
        ("POST", "/v1/decisions/{decision_id}/rederive"): [
            Case("POST", f"/v1/decisions/{d}/rederive")
        ],
        ("GET", "/v1/parameters/{region}"): [Case("GET", f"/v1/parameters/{THEIRS}")],
        ("GET", "/v1/parameters/{region}/{key}"): [
            Case("GET", "/v1/parameters/130300/dibao.standard_fen")
        ],
        ("POST", "/v1/parameters/{region}/{key}"): [
            Case(
                "POST",
                "/v1/parameters/130300/dibao.standard_fen",
                {"value": 1, "effective_from": "2020-01-01", "source": "《x》", "clause": "一"},
            )
        ],
        ("POST", "/v1/ledger/payments"): [
            Case("POST", "/v1/ledger/payments", payment(THEIRS, reference="mz-9")),
            Case("POST", "/v1/ledger/payments", payment(OURS, household_id=h, reference="mz-9")),
        ],
        ("GET", "/v1/ledger/duplicates"): [
            Case("GET", "/v1/ledger/duplicates", params={"region": "13"}, empty_list=True),
            Case("GET", "/v1/ledger/duplicates", params={"region": THEIRS}, empty_list=True),
        ],
        ("POST", "/v1/what-if"): [
            Case(
                "POST",
                "/v1/what-if",
                {"region": "130300", "value": 70000, "effective_from": "2026-01-01"},
            )
        ],
    }


def routes(settings: BenefitsSettings) -> set[tuple[str, str]]:
    paths = create_app(settings).openapi()["paths"]
    return {(method.upper(), path) for path, ops in paths.items() for method in ops}


async def send(benefits: httpx.AsyncClient, case: Case, headers: dict[str, str]) -> httpx.Response:
    return await benefits.request(
        case.method, case.path, json=case.json, params=case.params, headers=headers
    )


class TestEveryRouteIsConfined:
    def test_every_route_has_a_case_or_a_reason_to_be_open(
        self, benefits_settings: BenefitsSettings
    ) -> None:
        covered = set(cases(Theirs("h", "d"))) | set(OPEN)
        assert routes(benefits_settings) == covered

    @pytest.mark.parametrize("regions", [["4113"], []], ids=["another-region", "no-regions"])
    async def test_a_token_outside_the_region_finds_nothing_and_changes_nothing(
        self, benefits: httpx.AsyncClient, token: Callable[..., str], regions: list[str]
    ) -> None:
        theirs = await file_theirs(benefits, token)
        outsider = bearer(token(*SCOPES, regions=regions))
        for route, route_cases in cases(theirs).items():
            for case in route_cases:
                response = await send(benefits, case, outsider)
                if case.empty_list:
                    assert (response.status_code, response.json()) == (200, []), route
                else:
                    assert response.status_code == 404, (route, response.text)
                    assert response.json()["type"].endswith("/not-found"), route
                    assert "1303" not in response.json()["detail"], route
        # Region 13 sees its own, unchanged.
        owner = bearer(token(*SCOPES, regions=["13"]))
        card = await benefits.get(f"/v1/households/{theirs.household_id}/card", headers=owner)
        assert card.status_code == 200
        assert card.json()["region"] == THEIRS
        history = await benefits.get("/v1/parameters/130300/dibao.standard_fen", headers=owner)
        assert history.json()["added"] == []
        found = await benefits.get("/v1/ledger/duplicates", params={"region": "13"}, headers=owner)
        assert len(found.json()) == 1

    async def test_the_cases_reach_real_things_for_the_owner(
        self, benefits: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        theirs = await file_theirs(benefits, token)
        owner = bearer(token(*SCOPES, regions=["13"]))
        for route, route_cases in cases(theirs).items():
            for case in route_cases:
                if case.json and case.json.get("household", {}).get("region") == OURS:
                    continue  # a body of region 41: the owner is outside it too
                if case.json and case.json.get("region") == OURS:
                    continue
                response = await send(benefits, case, owner)
                assert response.status_code in (200, 201), (route, response.text)
                if case.empty_list:
                    assert response.json() != [], route


class TestHeldHouseholds:
    async def test_a_household_held_in_another_region_is_not_overwritten(
        self, benefits: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        theirs = await file_theirs(benefits, token)
        response = await benefits.put(
            f"/v1/households/{theirs.household_id}",
            json={"household": inputs(OURS, declared_income_fen=123400)},
            headers=bearer(token(*SCOPES, regions=["41"])),
        )
        assert response.status_code == 404
        card = await benefits.get(
            f"/v1/households/{theirs.household_id}/card",
            headers=bearer(token(*SCOPES, regions=["13"])),
        )
        assert (card.json()["region"], card.json()["income_fen"]) == (THEIRS, 0)

    async def test_a_household_can_move_between_the_callers_own_regions(
        self, benefits: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        headers = bearer(token(*SCOPES, regions=["41"]))
        for region in ("411302", "411321"):
            response = await benefits.put(
                "/v1/households/mover", json={"household": inputs(region)}, headers=headers
            )
            assert response.status_code == 200, response.text
        card = await benefits.get("/v1/households/mover/card", headers=headers)
        assert card.json()["region"] == "411321"


class TestParameters:
    async def test_a_county_reads_the_levels_above_it_but_sets_only_its_own(
        self, benefits: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        county = bearer(token(*SCOPES, regions=["411302"]))
        for path in ("/v1/parameters/410000", "/v1/parameters/411300/dibao.standard_fen"):
            response = await benefits.get(path, headers=county)
            assert response.status_code == 200, (path, response.text)
        value = {"value": 70000, "effective_from": "2026-01-01", "source": "《x》", "clause": "一"}
        city = await benefits.post(
            "/v1/parameters/411300/dibao.standard_fen", json=value, headers=county
        )
        assert city.status_code == 404
        own = await benefits.post(
            "/v1/parameters/411302/dibao.standard_fen", json=value, headers=county
        )
        assert own.status_code == 201, own.text

    async def test_a_what_if_above_the_callers_level_is_not_found(
        self, benefits: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        response = await benefits.post(
            "/v1/what-if",
            json={"region": "411300", "value": 70000, "effective_from": "2026-01-01"},
            headers=bearer(token(*SCOPES, regions=["411302"])),
        )
        assert response.status_code == 404


class TestLedger:
    async def test_another_regions_payment_with_the_same_reference_is_never_returned(
        self, benefits: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        await file_theirs(benefits, token)
        ours = payment(OURS, household_id="h41", amount_fen=7000)
        headers = bearer(token(*SCOPES, regions=["4113"]))
        first = await benefits.post("/v1/ledger/payments", json=ours, headers=headers)
        assert first.status_code == 201, first.text
        posted = first.json()["payment"]
        assert (posted["region"], posted["household_id"], posted["amount_fen"]) == (
            OURS,
            "h41",
            7000,
        )
        again = await benefits.post("/v1/ledger/payments", json=ours, headers=headers)
        assert again.json()["payment"]["id"] == posted["id"]  # a re-send is still one payment

    async def test_the_same_household_paid_in_another_region_is_no_duplicate_here(
        self, benefits: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        await benefits.post(
            "/v1/ledger/payments",
            json=payment(THEIRS, household_id="shared-id"),
            headers=bearer(token(*SCOPES, regions=["13"])),
        )
        ours = await benefits.post(
            "/v1/ledger/payments",
            json=payment(OURS, household_id="shared-id", department="总工会", reference="g1"),
            headers=bearer(token(*SCOPES, regions=["4113"])),
        )
        assert ours.status_code == 201, ours.text
        assert ours.json()["duplicates"] == []

    async def test_duplicates_are_confined_to_the_callers_regions_within_the_prefix(
        self, benefits: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        await file_theirs(benefits, token)
        province = bearer(token(*SCOPES, regions=["41", "13"]))
        for department, reference in (("民政局", "a"), ("总工会", "b")):
            await benefits.post(
                "/v1/ledger/payments",
                json=payment(OURS, department=department, reference=reference),
                headers=province,
            )
        everything = await benefits.get(
            "/v1/ledger/duplicates", params={"region": "13"}, headers=province
        )
        assert [d["region"] for d in everything.json()] == [THEIRS]
        county = bearer(token(*SCOPES, regions=["411302"]))
        found = await benefits.get("/v1/ledger/duplicates", params={"region": "41"}, headers=county)
        assert [d["region"] for d in found.json()] == [OURS]


class TestHouseholdsKnownFromEvents:
    async def test_an_id_known_from_another_regions_events_cannot_be_claimed_by_a_put(
        self,
        benefits: httpx.AsyncClient,
        benefits_settings: BenefitsSettings,
        nats_url: str,
        token: Callable[..., str],
    ) -> None:
        """Its verified income and income months would answer on the claimant's card."""
        data = {"household_id": "hv13", "report_version": 1, "per_capita_income_fen": 12345}
        report = new_event(
            service="verification",
            aggregate="verification",
            name="completed",
            subject="v-13",
            region=THEIRS,
            sequence=1,
            data={**data, "asset_verdicts": {}, "discrepancies": [], "unavailable_departments": []},
        )
        month = new_event(
            service="registry",
            aggregate="household",
            name="income_recorded",
            subject="hv13",
            region=THEIRS,
            sequence=1,
            data={"household_id": "hv13", "month": "2026-10", "income_fen": 1, "member_count": 1},
        )
        await publish(nats_url, report, month)
        url, schema = benefits_settings.database
        db = Database(url, schema=schema)

        async def consumed() -> bool:
            async with db.unit_of_work() as uow:
                verified = await store.get_verified_income(uow.session, "hv13")
                months = await store.income_months(uow.session, "hv13")
            return verified is not None and len(months) == 1

        await eventually(consumed)
        await db.dispose()
        ours = bearer(token(*SCOPES, regions=["4113"]))
        claim = await benefits.put(
            "/v1/households/hv13", json={"household": inputs(OURS)}, headers=ours
        )
        assert claim.status_code == 404, claim.text
        owner = bearer(token(*SCOPES, regions=["13"]))
        own = await benefits.put(
            "/v1/households/hv13", json={"household": inputs(THEIRS)}, headers=owner
        )
        assert (own.json()["income_source"], own.json()["report_version"]) == ("verified", 1)


class TestFetchingFromTheRegistry:
    async def test_a_caller_outside_the_files_region_causes_no_pii_read_at_the_registry(
        self,
        benefits_settings: BenefitsSettings,
        registry_server: str,
        registry_settings: RegistrySettings,
        nats_url: str,
        token: Callable[..., str],
    ) -> None:
        async with httpx.AsyncClient(base_url=registry_server, timeout=10) as registry:
            household_id = (await file_household(registry, token)).json()["id"]
        # Only the request may fetch the file: its events are dropped before benefits starts.
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        await eventually(lambda: js.stream_info("REGISTRY"))
        await asyncio.sleep(1)  # let the registry's relay publish what it has
        await js.purge_stream("REGISTRY")
        await nc.close()
        settings = benefits_settings.model_copy(
            update={"follow_registry": True, "registry_url": registry_server}
        )
        async with running(create_app(settings)) as benefits:
            outsider = bearer(token("benefits:read", regions=["13"]))
            for path in ("card", "eligibility", "exit"):
                response = await benefits.get(
                    f"/v1/households/{household_id}/{path}", headers=outsider
                )
                assert response.status_code == 404, (path, response.text)
            reads = await pii_reads(registry_settings, household_id)
            assert reads == 0
            own = await benefits.get(
                f"/v1/households/{household_id}/card",
                headers=bearer(token("benefits:read", regions=["4113"])),
            )
            assert own.status_code == 200, own.text
        assert await pii_reads(registry_settings, household_id) == 1


async def pii_reads(settings: RegistrySettings, household_id: str) -> int:
    url, schema = settings.database
    db = Database(url, schema=schema)
    async with db.sessionmaker() as session:
        count = await session.scalar(
            select(func.count()).where(
                audit.audit_log.c.action == "household.pii_read",
                audit.audit_log.c.target == household_id,
            )
        )
    await db.dispose()
    return int(count or 0)
