"""The four services running on data owned by region 4113, for the route matrix.

Each fixture starts one service (the verification one with the registry over HTTP and the
department sandbox, as in production), files through its API what region 4113 (宛城区, 411302)
owns, and a little of region 4201 (江岸区, 420102) so that a 4201 caller has ids of its own to
mix with 4113 ones. It hands the matrix the app, a client, the value naming the 4113 resource
for each path parameter, the request each route needs, and the markers (ids, the county code)
that must not show up in an answer to a caller outside 4113.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from sandbox.app import create_app as create_sandbox
from sandbox.settings import SandboxSettings
from services.benefits.app import create_app as create_benefits
from services.benefits.settings import BenefitsSettings
from services.notifications.app import create_app as create_notifications
from services.notifications.settings import NotificationsSettings
from services.registry.app import create_app as create_registry
from services.registry.dci import store as dci_store
from services.registry.settings import RegistrySettings
from services.verification.app import create_app as create_verification
from services.verification.domain.departments import Department
from services.verification.settings import VerificationSettings
from tests.conftest import running, serving
from tests.dci.dci import SENDER as DCI_SENDER
from tests.dci.dci import envelope as dci_envelope
from tests.dci.dci import search, settings_for_dci, subscribe
from tests.helpers import bearer, eventually, household_body, identity_number
from tests.services.benefits.conftest import benefits_settings  # noqa: F401 - a fixture
from tests.services.notifications.conftest import (  # noqa: F401 - fixtures
    SECRET,
    Publish,
    Receiver,
    notifications_settings,
    publish,
    receiver,
)
from tests.services.registry.test_api import Walk
from tests.services.registry.test_excel import XLSX, ledger, row
from tests.services.verification.conftest import (  # noqa: F401 - a fixture
    verification_settings,
)

OWNER_REGION, INTRUDER_REGION = "411302", "420102"
OWNER_CLIENT, INTRUDER_CLIENT = "helper:H4113", "helper:H4201"
TODAY = date.today()
ALL_DEPARTMENTS = [d.value for d in Department]
RouteKey = tuple[str, str]  # (method, path) as the app declares it
Token = Callable[..., str]


@dataclass(frozen=True)
class Call:
    """How the matrix calls a route: path values beyond the defaults, query, body, headers."""

    path: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)
    json: Any = None
    files: Mapping[str, tuple[str, bytes, str]] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Foreign:
    """Case 5: the 4201 caller in its own context with one 4113 id or number inside."""

    call: Call
    expect: frozenset[int]
    why: str
    empty_ok: bool = False  # a 200 whose every list is empty is refusal enough
    # For work accepted to be done later (a batch): what went wrong in it, or None.
    then: Callable[[httpx.AsyncClient, httpx.Response, str], Awaitable[str | None]] | None = None


@dataclass
class Served:
    """A running service on seeded data, as the matrix needs it."""

    app: FastAPI
    client: httpx.AsyncClient
    values: dict[str, str]
    calls: dict[RouteKey, Call] = field(default_factory=dict)
    foreign: dict[RouteKey, list[Foreign]] = field(default_factory=dict)
    owner_markers: set[str] = field(default_factory=set)
    intruder_markers: set[str] = field(default_factory=set)
    # What the owner reads to see that the others' refused writes changed nothing.
    watched: list[str] = field(default_factory=list)


def _ok(response: httpx.Response, *expected: int) -> Any:
    assert response.status_code in (expected or (200,)), (
        f"seeding {response.request.method} {response.request.url.path}: "
        f"{response.status_code} {response.text}"
    )
    return response.json() if response.content else None


# -- registry --------------------------------------------------------------------------------


@dataclass
class _Filed:
    id: str
    member_id: str
    head_number: str
    etag: str


async def _file(
    client: httpx.AsyncClient, token: Token, region: str, *, serial: int, to: str
) -> _Filed:
    """File a household of `region` with a head and a child, and walk it to status `to`."""
    regions = [region[:4]]
    write = bearer(token("registry:write", regions=regions))
    head = identity_number(region=region, serial=serial)
    child: dict[str, object] = {
        "name": "张小明",
        "identity_number": identity_number(
            region=region, birth=date(2010, 1, 2), serial=serial + 1
        ),
        "relation": "child",
    }
    created = _ok(
        await client.post(
            "/v1/households",
            json=household_body(region, head_number=head, members=[child]),
            headers=write,
        ),
        201,
    )
    walk = Walk(client, token, created["id"], regions=regions)
    member_id = next(m["id"] for m in created["members"] if m["relation"] == "child")
    declared = await client.post(
        f"/v1/households/{walk.id}/declarations",
        json={
            "items": [
                {"member_id": member_id, "kind": "income", "item": "wages", "amount_fen": 90000}
            ]
        },
        headers={**write, "If-Match": walk.etag},
    )
    _ok(declared, 201)
    walk.etag = declared.headers["etag"]
    await walk.step("community_review", "review:community", comment="情况属实")
    await walk.plan()
    await walk.step("street_review", "review:street")
    await walk.step("county_approve", "review:county")
    await walk.step("start_notice", "review:county")
    if to == "enrolled":
        await walk.step("enroll", "review:county")
    return _Filed(walk.id, member_id, head, walk.etag)


async def _etag(client: httpx.AsyncClient, token: Token, household_id: str, region: str) -> str:
    read = await client.get(
        f"/v1/households/{household_id}",
        headers=bearer(token("registry:read", regions=[region[:4]])),
    )
    _ok(read)
    etag: str = read.headers["etag"]
    return etag


DCI_TRANSACTION = "matrix-dci-search"
DCI_SUBSCRIPTION = "sub-matrix-owner"


def dci_search(id_type: str, value: str) -> dict[str, Any]:
    message = search("idtype-value", {"type": id_type, "value": value})
    message["transaction_id"] = DCI_TRANSACTION
    return message


async def _dci_seeded(
    app: FastAPI, client: httpx.AsyncClient, token: Token, owner: _Filed
) -> dict[RouteKey, Call]:
    """The owner's DCI search (for txn status) and subscription (to unsubscribe); the calls."""
    owner_dci = bearer(token("dci:search", regions=["4113"], client_id=OWNER_CLIENT))
    by_id = dci_envelope("search", dci_search("HOUSEHOLD_ID", owner.id))
    assert owner.id in str(
        _ok(await client.post("/registry/sync/search", json=by_id, headers=owner_dci))
    )
    async with app.state.runtime.db.unit_of_work() as uow:
        await dci_store.add_subscription(
            uow.session,
            {
                "code": DCI_SUBSCRIPTION,
                "client_id": OWNER_CLIENT,
                "sender_id": DCI_SENDER,
                "sender_uri": None,
                "regions": ["4113"],
                "event_type": "UPDATE",
                "filter_type": "idtype-value",
                "filter": {"type": "HOUSEHOLD_ID", "value": owner.id},
                "record_type": "Group",
                "status": "subscribe",
                "created_at": datetime.now(UTC),
            },
        )
        await uow.commit()
    status = {
        "transaction_id": "matrix-dci-status",
        "txnstatus_request": {
            "reference_id": "matrix-dci-status",
            "txn_type": "search",
            "attribute_type": "transaction_id",
            "attribute_value": DCI_TRANSACTION,
        },
    }
    unsubscribe = {
        "transaction_id": "matrix-dci-unsubscribe",
        "timestamp": datetime.now(UTC).isoformat(),
        "subscription_codes": [DCI_SUBSCRIPTION],
    }
    return {
        ("POST", "/registry/sync/search"): Call(json=by_id),
        ("POST", "/registry/search"): Call(json=by_id),
        ("POST", "/registry/subscribe"): Call(
            json=dci_envelope(
                "subscribe", subscribe("UPDATE", {"type": "HOUSEHOLD_ID", "value": owner.id})
            )
        ),
        ("POST", "/registry/unsubscribe"): Call(json=dci_envelope("unsubscribe", unsubscribe)),
        ("POST", "/registry/txn/status"): Call(json=dci_envelope("txn-status", status)),
        ("POST", "/registry/sync/txn/status"): Call(json=dci_envelope("txn-status", status)),
    }


@pytest.fixture
async def registry_served(
    registry_settings: RegistrySettings, token: Token
) -> AsyncIterator[Served]:
    """The registry: an enrolled 4113 household with helper, visit, declaration and income;
    a second one in 公示; an enrolled 4201 household."""
    settings = settings_for_dci(registry_settings.model_copy(update={"notice_days": {"": 0}}))
    app = create_registry(settings)
    async with running(app) as client:
        owner = await _file(client, token, OWNER_REGION, serial=411, to="enrolled")
        noticed = await _file(client, token, OWNER_REGION, serial=421, to="noticed")
        intruder = await _file(client, token, INTRUDER_REGION, serial=431, to="enrolled")
        write = bearer(token("registry:write", regions=["4113"]))
        _ok(
            await client.put(
                f"/v1/households/{owner.id}/helper",
                json={"id": "H4113", "name": "李帮扶", "unit": "宛城区民政局"},
                headers=write,
            )
        )
        _ok(
            await client.post(
                f"/v1/households/{owner.id}/visits",
                json={"visited_on": TODAY.isoformat(), "findings": "入户走访，情况属实"},
                headers=write,
            ),
            201,
        )
        month = f"{TODAY:%Y-%m}"
        _ok(
            await client.put(
                f"/v1/households/{owner.id}/incomes/{month}",
                json={"month": month, "income_fen": 120000},
                headers=write,
            )
        )
        owner.etag = await _etag(client, token, owner.id, OWNER_REGION)
        intruder.etag = await _etag(client, token, intruder.id, INTRUDER_REGION)
        dci_calls = await _dci_seeded(app, client, token, owner)
        served = Served(
            app=app,
            client=client,
            values={
                "household_id": owner.id,
                "member_id": owner.member_id,
                "month": month,
                "step": "exit",
                "region": OWNER_REGION,
                "year": str(TODAY.year),
                "type_": "cn.bangfu.registry.household.applied.v1",
            },
            owner_markers={owner.id, noticed.id, owner.member_id, OWNER_REGION},
            intruder_markers={intruder.id, intruder.member_id, INTRUDER_REGION},
            watched=[
                f"/v1/households/{owner.id}",
                f"/v1/households/{noticed.id}",
                f"/v1/households/{owner.id}/helpers",
                f"/v1/households/{owner.id}/visits",
                f"/v1/households/{owner.id}/incomes",
                f"/v1/households/{owner.id}/declarations",
            ],
        )
        versioned = {"If-Match": owner.etag}
        newcomer = identity_number(region=OWNER_REGION, birth=date(1985, 3, 3), serial=441)
        served.calls = {
            ("POST", "/v1/households"): Call(
                json=household_body(
                    OWNER_REGION,
                    head_number=identity_number(region=OWNER_REGION, serial=451),
                )
            ),
            ("PATCH", "/v1/households/{household_id}"): Call(
                json={"category": "dibao_edge"}, headers=versioned
            ),
            ("POST", "/v1/households/{household_id}/steps/{step}"): Call(
                json={"comment": "收入超标", "exit_kind": "tuokun"}, headers=versioned
            ),
            ("POST", "/v1/households/{household_id}/members"): Call(
                json={"name": "张新", "identity_number": newcomer, "relation": "spouse"},
                headers=versioned,
            ),
            ("PATCH", "/v1/households/{household_id}/members/{member_id}"): Call(
                json={"union_member": True}, headers=versioned
            ),
            ("DELETE", "/v1/households/{household_id}/members/{member_id}"): Call(
                query={"reason": "迁出"}, headers=versioned
            ),
            ("PUT", "/v1/households/{household_id}/plan"): Call(
                json={
                    "measures": [
                        {
                            "group": "employment",
                            "measure": "公益性岗位",
                            "lead_department": "人社局",
                        }
                    ]
                },
                headers=versioned,
            ),
            ("PUT", "/v1/households/{household_id}/helper"): Call(
                json={"id": "H4201", "name": "王帮扶", "unit": "江岸区民政局"}
            ),
            ("POST", "/v1/households/{household_id}/visits"): Call(
                json={"visited_on": TODAY.isoformat(), "findings": "入户走访"}
            ),
            ("POST", "/v1/households/{household_id}/declarations"): Call(
                json={
                    "items": [
                        {
                            "member_id": owner.member_id,
                            "kind": "asset",
                            "item": "deposits",
                            "amount_fen": 500000,
                        }
                    ]
                },
                headers=versioned,
            ),
            ("PUT", "/v1/households/{household_id}/incomes/{month}"): Call(
                json={"month": month, "income_fen": 1}
            ),
            # A province-wide filter: the county code then shows only in what is found.
            ("GET", "/v1/households"): Call(query={"region": "41"}),
            ("POST", "/v1/households:batch-get"): Call(
                json={"ids": [owner.id, noticed.id], "include": ["declarations"]}
            ),
            ("POST", "/v1/households:search"): Call(json={"identity_number": owner.head_number}),
            ("GET", "/v1/statistics"): Call(query={"region": "41"}),
            ("GET", "/v1/exports/ledger"): Call(query={"region": "41"}),
            ("GET", "/v1/notices/{region}"): Call(path={"region": "41"}),
            ("PUT", "/v1/targets/{region}/{year}"): Call(json={"share_percent": 30}),
            ("POST", "/v1/imports/ledger"): Call(files={"file": _ledger()}),
            **dci_calls,
        }
        intruder_member = {"household_id": intruder.id, "member_id": owner.member_id}
        served.foreign = {
            ("GET", "/v1/households"): [
                Foreign(
                    Call(query={"helper_id": "H4113"}),
                    frozenset({404}),
                    "the households of a 4113 helper",
                    empty_ok=True,
                )
            ],
            ("POST", "/v1/households:batch-get"): [
                Foreign(
                    Call(json={"ids": [intruder.id, owner.id], "include": ["declarations"]}),
                    frozenset({200}),
                    "a 4113 id among the caller's own: its own file, the 4113 one not found",
                )
            ],
            ("POST", "/v1/households:search"): [
                Foreign(
                    Call(json={"identity_number": owner.head_number}),
                    frozenset({200}),
                    "the number of a person filed in 4113: found nowhere",
                    empty_ok=True,
                )
            ],
            ("POST", "/v1/households"): [
                Foreign(
                    Call(json=household_body(INTRUDER_REGION, head_number=owner.head_number)),
                    frozenset({409}),
                    "filing a person already filed in 4113: 409 without naming the household",
                )
            ],
            ("PATCH", "/v1/households/{household_id}/members/{member_id}"): [
                Foreign(
                    Call(
                        path=intruder_member,
                        json={"union_member": True},
                        headers={"If-Match": intruder.etag},
                    ),
                    frozenset({404, 422}),
                    "a 4113 member under the caller's own household: not found there",
                )
            ],
            ("DELETE", "/v1/households/{household_id}/members/{member_id}"): [
                Foreign(
                    Call(
                        path=intruder_member,
                        query={"reason": "迁出"},
                        headers={"If-Match": intruder.etag},
                    ),
                    frozenset({404, 422}),
                    "a 4113 member under the caller's own household: not found there",
                )
            ],
            ("POST", "/registry/sync/search"): [
                Foreign(
                    Call(json=dci_envelope("search", dci_search("UIN", owner.head_number))),
                    frozenset({200}),
                    "a 4113 identity number searched with a 4201 token: nothing found",
                )
            ],
        }
        yield served


def _ledger() -> tuple[str, bytes, str]:
    """A one-household ledger (信息台账) of 411302, as a county office uploads it."""
    content = ledger(
        [row("A", 461, **{"身份证号": identity_number(serial=461, birth=date(1977, 7, 7))})]
    )
    return ("台账.xlsx", content, XLSX)


# -- benefits --------------------------------------------------------------------------------

BENEFITS_HOUSEHOLD = "bh-4113"


def _inputs(region: str = OWNER_REGION, **overrides: Any) -> dict[str, Any]:
    """四口之家 of `region`: the benefits service's inputs of a household."""
    return {
        "region": region,
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


def _payment(department: str, period: str, reference: str, **fields: Any) -> dict[str, Any]:
    return {
        "department": department,
        "measure": "temporary_relief",
        "household_id": BENEFITS_HOUSEHOLD,
        "region": OWNER_REGION,
        "period": period,
        "amount_fen": 50000,
        "reference": reference,
        **fields,
    }


@pytest.fixture
async def benefits_served(
    benefits_settings: BenefitsSettings,  # noqa: F811 - the imported fixture
    token: Token,
) -> AsyncIterator[Served]:
    """Benefits: a held 4113 household with its decision, and the same need paid twice."""
    app = create_benefits(benefits_settings)
    async with running(app) as client:
        admin = bearer(token("benefits:read", "benefits:admin", regions=["4113"]))
        card = _ok(
            await client.put(
                f"/v1/households/{BENEFITS_HOUSEHOLD}",
                json={"household": _inputs()},
                headers=admin,
            )
        )
        first = _ok(
            await client.post(
                "/v1/ledger/payments", json=_payment("民政局", "2025-03", "mz-4113"), headers=admin
            ),
            201,
        )
        second = _ok(
            await client.post(
                "/v1/ledger/payments", json=_payment("总工会", "2025", "gh-4113"), headers=admin
            ),
            201,
        )
        assert second["duplicates"], "seeding: the second payment of a need is a duplicate"
        value = {
            "value": 66000,
            "effective_from": "2020-01-01",
            "source": "《调标通知》",
            "document": "宛民〔2026〕1号",
            "clause": "一",
        }
        served = Served(
            app=app,
            client=client,
            values={
                "household_id": BENEFITS_HOUSEHOLD,
                "decision_id": card["decision_id"],
                "region": OWNER_REGION,
                "key": "dibao.standard_fen",
                "type_": "x",
            },
            owner_markers={
                BENEFITS_HOUSEHOLD,
                card["decision_id"],
                first["payment"]["id"],
                second["payment"]["id"],
                OWNER_REGION,
            },
            intruder_markers={INTRUDER_REGION},
            watched=[
                f"/v1/households/{BENEFITS_HOUSEHOLD}/eligibility",
                f"/v1/decisions/{card['decision_id']}",
                f"/v1/parameters/{OWNER_REGION}/dibao.standard_fen",
                "/v1/ledger/duplicates?region=4113",
            ],
        )
        served.calls = {
            ("POST", "/v1/cards"): Call(json={"household": _inputs()}),
            ("POST", "/v1/eligibility"): Call(json={"household": _inputs()}),
            ("PUT", "/v1/households/{household_id}"): Call(json={"household": _inputs()}),
            ("POST", "/v1/parameters/{region}/{key}"): Call(json=value),
            ("POST", "/v1/ledger/payments"): Call(json=_payment("民政局", "2025-05", "mz-4113-5")),
            ("GET", "/v1/ledger/duplicates"): Call(query={"region": "41"}),
            ("POST", "/v1/what-if"): Call(
                json={"region": "411300", "value": 70000, "effective_from": "2026-01-01"}
            ),
        }
        served.foreign = {
            ("PUT", "/v1/households/{household_id}"): [
                Foreign(
                    Call(json={"household": _inputs(INTRUDER_REGION)}),
                    frozenset({404}),
                    "a 4113 household overwritten by naming the caller's region in the body",
                )
            ],
            ("POST", "/v1/ledger/payments"): [
                Foreign(
                    Call(json=_payment("民政局", "2025-03", "mz-4113", region=INTRUDER_REGION)),
                    frozenset({201, 403, 404, 409, 422}),
                    "a 4201 payment with a 4113 payment's department and reference: never the "
                    "4113 payment back",
                )
            ],
        }
        yield served


# -- notifications ---------------------------------------------------------------------------

NOTIFIED_HOUSEHOLD = "hh-n-4113"


async def _subscribe(
    client: httpx.AsyncClient, token: Token, url: str, *, region: str, client_id: str
) -> str:
    created = _ok(
        await client.post(
            "/v1/subscriptions",
            json={
                "url": url,
                "secret": SECRET,
                "event_types": ["*"],
                "regions": [region[:4]],
            },
            headers=bearer(token("notifications:admin", regions=[region[:4]], client_id=client_id)),
        ),
        201,
    )
    subscription_id: str = created["id"]
    return subscription_id


@pytest.fixture
async def notifications_served(
    notifications_settings: NotificationsSettings,  # noqa: F811 - the imported fixture
    receiver: Receiver,  # noqa: F811 - the imported fixture
    publish: Publish,  # noqa: F811 - the imported fixture
    token: Token,
) -> AsyncIterator[Served]:
    """Notifications: a 4113 webhook with a delivery and its attempt, and an inbox message of
    the 4113 helper; a 4201 webhook of another client."""
    app = create_notifications(notifications_settings)
    async with running(app) as client:
        owned = await _subscribe(
            client, token, receiver.url, region=OWNER_REGION, client_id=OWNER_CLIENT
        )
        foreign = await _subscribe(
            client, token, receiver.url, region=INTRUDER_REGION, client_id=INTRUDER_CLIENT
        )
        event = await publish(
            "registry",
            "household",
            "helper_assigned",
            household_id=NOTIFIED_HOUSEHOLD,
            region=OWNER_REGION,
            data={"helper_id": "H4113", "helper_name_masked": "李*", "unit": "宛城区民政局"},
        )
        owner = bearer(token("notifications:admin", regions=["4113"], client_id=OWNER_CLIENT))

        async def inbox() -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = _ok(await client.get("/v1/inbox", headers=owner))["items"]
            return items

        async def delivered() -> list[dict[str, Any]]:
            page = _ok(
                await client.get(
                    f"/v1/subscriptions/{owned}/deliveries",
                    params={"status": "delivered"},
                    headers=owner,
                )
            )
            items: list[dict[str, Any]] = page["items"]
            return items

        message = (await eventually(inbox, "seeding: the helper's inbox message"))[0]
        delivery = (await eventually(delivered, "seeding: the webhook delivery"))[0]
        served = Served(
            app=app,
            client=client,
            values={
                "subscription_id": owned,
                "delivery_id": delivery["id"],
                "message_id": message["id"],
                "type_": "x",
            },
            owner_markers={
                owned,
                delivery["id"],
                message["id"],
                event.id,
                NOTIFIED_HOUSEHOLD,
                OWNER_REGION,
            },
            intruder_markers={foreign, INTRUDER_REGION},
            watched=[
                f"/v1/subscriptions/{owned}",
                f"/v1/messages/{message['id']}",
            ],
        )
        now = datetime.now(UTC)
        served.calls = {
            ("POST", "/v1/subscriptions"): Call(
                json={
                    "url": receiver.url,
                    "secret": SECRET,
                    "event_types": ["*"],
                    "regions": ["4113"],
                }
            ),
            ("POST", "/v1/subscriptions/{subscription_id}/replay"): Call(
                json={
                    "since": (now - timedelta(hours=1)).isoformat(),
                    "until": now.isoformat(),
                }
            ),
            ("GET", "/v1/messages"): Call(query={"household_id": NOTIFIED_HOUSEHOLD}),
        }
        served.foreign = {
            ("GET", "/v1/messages"): [
                Foreign(
                    Call(query={"cause": event.id}),
                    frozenset({404}),
                    "the messages a 4113 event caused",
                    empty_ok=True,
                )
            ],
            ("GET", "/v1/subscriptions/{subscription_id}/deliveries/{delivery_id}/attempts"): [
                Foreign(
                    Call(path={"subscription_id": foreign}),
                    frozenset({404}),
                    "a 4113 delivery under the caller's own webhook",
                    empty_ok=True,
                )
            ],
        }
        yield served


# -- verification ----------------------------------------------------------------------------


@pytest.fixture
def sandbox_process() -> Iterator[str]:
    """The department sandbox for one test, over HTTP only: the verification tests' own one
    lives for the session on the session's NATS, and a second one there would answer (in the
    same queue group) the queries of their fault tests."""
    with serving(create_sandbox(SandboxSettings(nats_url="", seed=7))) as url:
        yield url


def _consent(number: str, region: str, **fields: Any) -> dict[str, Any]:
    return {
        "identity_number": number,
        "region": region,
        "signed_by": "张三明",
        "signed_on": (TODAY - timedelta(days=3)).isoformat(),
        "expires_on": (TODAY + timedelta(days=365)).isoformat(),
        "departments": ALL_DEPARTMENTS,
        "document_ref": f"授权-{number[-6:]}",
        **fields,
    }


async def _verified_nothing(
    client: httpx.AsyncClient, response: httpx.Response, token: str
) -> str | None:
    """A batch the caller may file: when it has run, it verified none of its households."""
    if response.status_code != 202:
        return None
    location = response.headers["Location"]

    async def finished() -> dict[str, Any] | None:
        body: dict[str, Any] = _ok(await client.get(location, headers=bearer(token)))
        return body if body["status"] != "running" else None

    batch = await eventually(finished, "seeding: the batch")
    return f"the batch verified {batch['done']} 4113 household(s)" if batch["done"] else None


@pytest.fixture
async def verification_served(
    verification_settings: VerificationSettings,  # noqa: F811 - the imported fixture
    registry_server: str,
    token: Token,
) -> AsyncIterator[Served]:
    """Verification beside the registry and the sandbox: a 4113 household of the registry with
    its head's consent, a completed verification with its report, and a batch."""
    head = identity_number(region=OWNER_REGION, serial=471)
    async with httpx.AsyncClient(base_url=registry_server, timeout=30) as registry:
        filed = _ok(
            await registry.post(
                "/v1/households",
                json=household_body(OWNER_REGION, head_number=head),
                headers=bearer(token("registry:write", regions=["4113"])),
            ),
            201,
        )
    household_id: str = filed["id"]
    app = create_verification(verification_settings)
    async with running(app) as client:
        owner = bearer(token("verification:request", regions=["4113"], client_id=OWNER_CLIENT))
        consent = _ok(
            await client.post(
                "/v1/consents",
                json=_consent(head, OWNER_REGION, household_id=household_id),
                headers=owner,
            ),
            201,
        )
        asked = _ok(
            await client.post(
                "/v1/verifications",
                json={"household_id": household_id, "purpose": "申请审核"},
                headers=owner,
            ),
            202,
        )

        async def completed() -> bool:
            status = _ok(await client.get(f"/v1/verifications/{asked['id']}", headers=owner))
            return bool(status["status"] == "completed")

        await eventually(completed, "seeding: the verification's report")
        batch = _ok(
            await client.post(
                "/v1/batches",
                json={
                    "region": OWNER_REGION,
                    "household_ids": [household_id],
                    "purpose": "年度复核",
                },
                headers=owner,
            ),
            202,
        )
        served = Served(
            app=app,
            client=client,
            values={
                "verification_id": asked["id"],
                "consent_id": consent["id"],
                "batch_id": batch["id"],
                "type_": "x",
            },
            owner_markers={household_id, asked["id"], consent["id"], batch["id"], OWNER_REGION},
            intruder_markers={INTRUDER_REGION},
            watched=[
                f"/v1/consents/{consent['id']}",
                f"/v1/verifications/{asked['id']}/reports",
            ],
        )
        newcomer = identity_number(region=OWNER_REGION, birth=date(1990, 9, 9), serial=481)
        served.calls = {
            ("POST", "/v1/consents"): Call(json=_consent(newcomer, OWNER_REGION)),
            ("POST", "/v1/consents/search"): Call(json={"identity_number": head}),
            ("POST", "/v1/consents/{consent_id}/revoke"): Call(json={"reason": "本人撤回"}),
            ("POST", "/v1/verifications"): Call(
                json={"household_id": household_id, "purpose": "申请审核"}
            ),
            ("GET", "/v1/verifications"): Call(query={"household_id": household_id}),
            ("POST", "/v1/batches"): Call(
                json={"region": OWNER_REGION, "household_ids": [household_id], "purpose": "复核"}
            ),
            ("POST", "/v1/persons/queries"): Call(json={"identity_number": head}),
        }
        refused = frozenset({403, 404, 422})
        served.foreign = {
            ("GET", "/v1/verifications"): [
                Foreign(
                    Call(query={"batch_id": batch["id"]}),
                    frozenset({404}),
                    "the verifications of a 4113 batch",
                    empty_ok=True,
                )
            ],
            ("POST", "/v1/batches"): [
                Foreign(
                    Call(
                        json={
                            "region": INTRUDER_REGION,
                            "household_ids": [household_id],
                            "purpose": "复核",
                        }
                    ),
                    refused | {202},
                    "a 4113 household in a batch filed under the caller's region: refused, or "
                    "never verified",
                    then=_verified_nothing,
                )
            ],
            ("POST", "/v1/consents"): [
                Foreign(
                    Call(json=_consent(newcomer, INTRUDER_REGION, household_id=household_id)),
                    refused,
                    "a consent naming a 4113 household, recorded under the caller's region",
                )
            ],
            ("POST", "/v1/verifications"): [
                Foreign(
                    Call(
                        json={
                            "members": [{"member_id": "m1", "identity_number": head}],
                            "region": INTRUDER_REGION,
                            "purpose": "申请审核",
                        }
                    ),
                    refused,
                    "a 4113 person asked about under the caller's region: 4113's consent does "
                    "not cover it",
                )
            ],
        }
        yield served
