"""The DCI endpoints on the registry: confinement, masking, audit, envelopes, persistence."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import date
from typing import Any
from urllib.parse import quote

import httpx
from sqlalchemy import select

from services.registry.app import create_app as create_registry
from services.registry.dci import notify
from services.registry.dci import store as dci_store
from services.registry.settings import RegistrySettings
from shared import audit
from shared.db import Database
from shared.events.consumer import inbox
from shared.events.envelope import new_event
from shared.identity import mask_identity_number
from tests.conftest import running
from tests.dci.dci import SENDER, envelope, receiving, search, settings_for_dci, subscribe
from tests.helpers import bearer, counted_calls, household_body, identity_number

OWNER, INTRUDER, ELSEWHERE = "411302", "410102", "410202"
Token = Callable[..., str]


async def _file(
    client: httpx.AsyncClient, token: Token, region: str, serial: int
) -> tuple[str, str]:
    """A household in `region`: its id and its head's identity number."""
    number = identity_number(region=region, birth=date(1990, 2, 3), serial=serial)
    response = await client.post(
        "/v1/households",
        json=household_body(region, head_number=number),
        headers=bearer(token("registry:write", regions=[region[:4]])),
    )
    assert response.status_code == 201, response.text
    return response.json()["id"], number


def _dci(token: Token, region: str, *scopes: str, **headers: str) -> dict[str, str]:
    return {
        **bearer(
            token(*(scopes or ("dci:search",)), regions=[region[:4]], client_id=f"dci-{region}")
        ),
        **headers,
    }


async def _subscribe(
    client: httpx.AsyncClient, token: Token, region: str, criteria: Any, sender_uri: str
) -> httpx.Response:
    """A subscription to filings (REGISTER) in `region`'s county, by its DCI client."""
    return await client.post(
        "/registry/subscribe",
        json=envelope("subscribe", subscribe("REGISTER", criteria), sender_uri=sender_uri),
        headers=_dci(token, region, "dci:subscribe"),
    )


def _records(answer: httpx.Response) -> list[dict[str, Any]]:
    assert answer.status_code == 200, answer.text
    item = answer.json()["message"]["search_response"][0]
    assert item["status"] == "succ", item
    records: list[dict[str, Any]] = item["data"]["reg_records"]
    return records


async def _rows(settings: RegistrySettings, table: Any) -> list[dict[str, Any]]:
    url, schema = settings.database
    db = Database(url, schema=schema)
    try:
        async with db.sessionmaker() as session:
            ordered = select(table).order_by(*table.primary_key.columns)
            return [dict(r) for r in (await session.execute(ordered)).mappings()]
    finally:
        await db.dispose()


class TestConfinement:
    async def test_a_4101_token_finds_no_4113_household_by_id_number_or_attribute(
        self, registry_settings: RegistrySettings, token: Token
    ) -> None:
        async with running(create_registry(settings_for_dci(registry_settings))) as client:
            household_id, number = await _file(client, token, OWNER, 601)
            await _file(client, token, INTRUDER, 602)
            queries = [
                ("idtype-value", {"type": "HOUSEHOLD_ID", "value": household_id}),
                ("idtype-value", {"type": "UIN", "value": number}),
                (
                    "predicate",
                    [
                        {
                            "seq_num": 1,
                            "expression1": {
                                "attribute_name": "region",
                                "operator": "eq",
                                "attribute_value": "41",
                            },
                        }
                    ],
                ),
                (
                    "expression",
                    {
                        "type": "ns:org:QueryType:expression",
                        "value": {
                            "expression": {
                                "collection": "Group",
                                "query": {"group_size": {"$gte": 1}},
                            }
                        },
                    },
                ),
            ]
            for query_type, query in queries:
                body = envelope("search", search(query_type, query))
                owner = await client.post(
                    "/registry/sync/search", json=body, headers=_dci(token, OWNER)
                )
                intruder = await client.post(
                    "/registry/sync/search",
                    json=envelope("search", search(query_type, query)),
                    headers=_dci(token, INTRUDER),
                )
                assert [r["@id"] for r in _records(owner)] == [household_id], query_type
                assert household_id not in intruder.text, query_type
                assert all(r["place"]["region"].startswith("4101") for r in _records(intruder)), (
                    query_type
                )

    async def test_notify_reaches_only_subscribers_whose_regions_hold_the_household(
        self, registry_settings: RegistrySettings, token: Token
    ) -> None:
        whole_province = [
            {
                "seq_num": 1,
                "expression1": {
                    "attribute_name": "region",
                    "operator": "eq",
                    "attribute_value": "41",
                },
            }
        ]
        with receiving() as (receiver, url):
            async with running(create_registry(settings_for_dci(registry_settings))) as client:
                for region in (OWNER, INTRUDER):
                    answer = await _subscribe(
                        client,
                        token,
                        region,
                        whole_province,
                        f"{url}/{region}/registry/on-subscribe",
                    )
                    assert answer.json()["message"]["ack_status"] == "ACK", answer.text
                await receiver.wait_for("on-subscribe", 2)
                # Filed where nobody subscribed, first: handled before the next one's notify.
                await _file(client, token, ELSEWHERE, 605)
                # Notify goes to the sender_uri the subscriber subscribed with.
                household_id, number = await _file(client, token, OWNER, 603)
                notified = await receiver.wait_for("notify", 1)
                # A 4101 filing afterwards: its notify comes after, to the 4101 subscriber only.
                intruder_id, _ = await _file(client, token, INTRUDER, 604)
                await receiver.wait_for("notify", 2)
        paths = [path for path, body in receiver.received if body["header"]["action"] == "notify"]
        records = [
            b["message"]["notify_event"][0]["data"]["reg_records"]["@id"]
            for b in receiver.of("notify")
        ]
        assert sorted(zip(paths, records, strict=True)) == sorted(
            [
                (f"/{OWNER}/registry/on-subscribe", household_id),
                (f"/{INTRUDER}/registry/on-subscribe", intruder_id),
            ]
        )
        assert number not in str(notified)  # notifications are masked
        assert mask_identity_number(number) in str(notified)
        # Only the events someone listens to took an inbox row (and a transaction): the
        # unsubscribed region's was acknowledged without.
        handled = [
            r["event_id"]
            for r in await _rows(registry_settings, inbox)
            if r["consumer"] == notify.CONSUMER
        ]
        assert sorted(handled) == sorted(
            b["message"]["notify_event"][0]["reference_id"] for b in receiver.of("notify")
        )

    async def test_the_events_wanted_are_those_of_a_subscribed_region_read_as_committed(
        self, registry_settings: RegistrySettings, token: Token, uses_sqlite: bool
    ) -> None:
        # Read apart from the unit's transaction: on a SQLite file with no call to the
        # driver's thread and without the write lock, which the registry's writers need.
        with receiving() as (receiver, url):
            async with running(create_registry(settings_for_dci(registry_settings))) as client:
                answer = await _subscribe(
                    client,
                    token,
                    OWNER,
                    {"type": "HOUSEHOLD_ID", "value": "h"},
                    f"{url}/{OWNER}/registry/on-subscribe",
                )
                assert answer.json()["message"]["ack_status"] == "ACK", answer.text
                await receiver.wait_for("on-subscribe")
        events = [
            new_event(
                service="registry",
                aggregate="household",
                name=name,
                subject="h",
                region=region,
                sequence=1,
                data={},
            )
            for name, region in [("applied", OWNER), ("applied", INTRUDER), ("visited", OWNER)]
        ]
        url_, schema = registry_settings.database
        db = Database(url_, schema=schema)
        try:
            counting = (
                counted_calls(db) if uses_sqlite else contextlib.nullcontext((None, None, None))
            )
            async with counting as (counted, _, _), db.unit_of_work() as uow:
                wanted = await notify.wanted(events, uow)
                began, calls = uow.session.in_transaction(), counted.calls if counted else 0
        finally:
            await db.dispose()
        assert (wanted, began, calls) == ({events[0].id}, False, 0)

    async def test_subscribe_with_a_4113_filter_from_a_4101_token_is_refused_nothing(
        self, registry_settings: RegistrySettings, token: Token
    ) -> None:
        # A subscription is bounded by its token's regions, whatever its filter names.
        with receiving() as (receiver, url):
            async with running(create_registry(settings_for_dci(registry_settings))) as client:
                owner_region = [
                    {
                        "seq_num": 1,
                        "expression1": {
                            "attribute_name": "region",
                            "operator": "eq",
                            "attribute_value": "4113",
                        },
                    }
                ]
                await client.post(
                    "/registry/subscribe",
                    json=envelope(
                        "subscribe", subscribe("REGISTER", owner_region), sender_uri=f"{url}/x"
                    ),
                    headers=_dci(token, INTRUDER, "dci:subscribe"),
                )
                await receiver.wait_for("on-subscribe")
                await _file(client, token, OWNER, 605)
                rows = await _rows(registry_settings, dci_store.delivery)
        assert [r["action"] for r in rows] == ["on-subscribe"]


class TestMaskingAndAudit:
    async def test_identity_numbers_are_masked_without_pii_read(
        self, registry_settings: RegistrySettings, token: Token
    ) -> None:
        async with running(create_registry(settings_for_dci(registry_settings))) as client:
            household_id, number = await _file(client, token, OWNER, 611)
            answer = await client.post(
                "/registry/sync/search",
                json=envelope("search", search("idtype-value", {"type": "UIN", "value": number})),
                headers=_dci(token, OWNER),
            )
        [record] = _records(answer)
        assert number not in answer.text
        head = record["group_head_info"]["demographic_info"]
        assert head["identifier"][0]["identifier_value"] == mask_identity_number(number)
        assert "birth_date" not in head
        assert await _rows(registry_settings, audit.audit_log) == []

    async def test_a_clear_read_needs_a_purpose_and_is_audited_with_it(
        self, registry_settings: RegistrySettings, token: Token
    ) -> None:
        async with running(create_registry(settings_for_dci(registry_settings))) as client:
            household_id, number = await _file(client, token, OWNER, 612)
            query = search("idtype-value", {"type": "UIN", "value": number})
            unsaid = await client.post(
                "/registry/sync/search",
                json=envelope("search", query),
                headers=_dci(token, OWNER, "dci:search", "pii:read"),
            )
            said = await client.post(
                "/registry/sync/search",
                json=envelope("search", query),
                headers=_dci(
                    token, OWNER, "dci:search", "pii:read", **{"Bangfu-Purpose": quote("低保复核")}
                ),
            )
        refused = unsaid.json()["message"]["search_response"][0]
        assert (refused["status"], refused["status_reason_code"]) == (
            "rjct",
            "rjct.search_criteria.invalid",
        )
        assert number not in unsaid.text
        [record] = _records(said)
        assert (
            record["group_head_info"]["demographic_info"]["identifier"][0]["identifier_value"]
            == number
        )
        rows = await _rows(registry_settings, audit.audit_log)
        assert [(r["client_id"], r["action"], r["target"], r["purpose"]) for r in rows] == [
            (f"dci-{OWNER}", "household.pii_read", household_id, "低保复核")
        ]

    async def test_a_clear_reply_is_kept_sealed_and_reopened_only_with_pii_read_and_purpose(
        self, registry_settings: RegistrySettings, token: Token
    ) -> None:
        purpose = {"Bangfu-Purpose": quote("低保复核")}
        with receiving() as (receiver, url):
            async with running(create_registry(settings_for_dci(registry_settings))) as client:
                household_id, number = await _file(client, token, OWNER, 613)
                asked = envelope(
                    "search",
                    search("idtype-value", {"type": "UIN", "value": number}),
                    sender_uri=f"{url}/registry/on-search",
                )
                await client.post(
                    "/registry/search",
                    json=asked,
                    headers=_dci(token, OWNER, "dci:search", "pii:read", **purpose),
                )
                [callback] = await receiver.wait_for("on-search")
                status = envelope(
                    "txn-status",
                    {
                        "transaction_id": "t",
                        "txnstatus_request": {
                            "reference_id": "r",
                            "txn_type": "search",
                            "attribute_type": "transaction_id",
                            "attribute_value": asked["message"]["transaction_id"],
                        },
                    },
                )
                masked = await client.post(
                    "/registry/sync/txn/status", json=status, headers=_dci(token, OWNER)
                )
                clear = await client.post(
                    "/registry/sync/txn/status",
                    json=status,
                    headers=_dci(token, OWNER, "dci:search", "pii:read", **purpose),
                )
        assert number in str(callback["message"])
        kept = await _rows(registry_settings, dci_store.transaction)
        queued = await _rows(registry_settings, dci_store.delivery)
        assert number not in str(kept) and number not in str(queued)
        assert number not in masked.text and masked.json()["header"]["status"] == "rjct"
        assert number in clear.text
        rows = await _rows(registry_settings, audit.audit_log)
        assert [(r["target"], r["detail"]["via"]) for r in rows] == [
            (household_id, "dci.search"),
            (household_id, "dci.txn_status"),
        ]


class TestEnvelope:
    async def test_auth_is_enforced_before_the_envelope(
        self, registry_settings: RegistrySettings, token: Token
    ) -> None:
        async with running(create_registry(settings_for_dci(registry_settings))) as client:
            body = envelope("search", search("idtype-value", {"type": "UIN", "value": "x"}))
            anonymous = await client.post("/registry/sync/search", json=body)
            unscoped = await client.post(
                "/registry/subscribe", json=body, headers=_dci(token, OWNER, "dci:search")
            )
        assert anonymous.status_code == 401
        assert anonymous.headers["content-type"] == "application/json"
        assert anonymous.json()["errors"][0]["code"] == "err.request.unauthorized"
        assert unscoped.status_code == 403
        assert unscoped.json()["errors"][0]["code"] == "err.request.forbidden"

    async def test_invalid_envelopes_answer_err_with_the_specs_codes(
        self, registry_settings: RegistrySettings, token: Token
    ) -> None:
        good = envelope("search", search("idtype-value", {"type": "UIN", "value": "x"}))
        tampered = {**good, "message": {**good["message"], "transaction_id": "other"}}
        cases = {
            "err.request.bad": [
                {k: v for k, v in good.items() if k != "message"},
                envelope("subscribe", search("idtype-value", {"type": "UIN", "value": "x"})),
                envelope(
                    "search", {"transaction_id": "t", "search_request": [{"reference_id": "r"}]}
                ),
            ],
            "err.signature.missing": [envelope("search", good["message"], sign=False)],
            "err.signature.invalid": [
                tampered,
                {**good, "signature": "invalid-signature"},
                {**good, "header": {**good["header"], "sender_id": "stranger"}},
            ],
        }
        async with running(create_registry(settings_for_dci(registry_settings))) as client:
            for code, bodies in cases.items():
                for body in bodies:
                    answer = await client.post(
                        "/registry/sync/search", json=body, headers=_dci(token, OWNER)
                    )
                    assert answer.status_code == 200
                    message = answer.json()["message"]
                    assert (message["ack_status"], message["error"]["code"]) == ("ERR", code), body
            assert (
                await client.post("/registry/sync/search", json=good, headers=_dci(token, OWNER))
            ).json()["header"]["status"] == "succ"

    async def test_answers_are_signed_with_the_key_the_jwks_publishes(
        self, registry_settings: RegistrySettings, token: Token
    ) -> None:
        import base64

        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        from services.registry.dci.signing import verify

        async with running(create_registry(settings_for_dci(registry_settings))) as client:
            jwks = (await client.get("/.well-known/jwks.json")).json()
            answer = (
                await client.post(
                    "/registry/sync/search",
                    json=envelope("search", search("idtype-value", {"type": "UIN", "value": "x"})),
                    headers=_dci(token, OWNER),
                )
            ).json()
        [jwk] = jwks["keys"]
        key = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(jwk["x"] + "=="))
        verify(
            answer["signature"],
            sender_id="bangfu-registry",
            header=answer["header"],
            message=answer["message"],
            key=key,
        )


class TestPersistence:
    async def test_an_async_reply_acknowledged_before_a_restart_is_delivered_after_it(
        self, registry_settings: RegistrySettings, token: Token
    ) -> None:
        settings = settings_for_dci(registry_settings)
        with receiving() as (receiver, url):
            receiver.refuse = 10**6  # the SPMIS is down while the first registry process runs
            async with running(create_registry(settings)) as client:
                household_id, number = await _file(client, token, OWNER, 621)
                body = envelope(
                    "search",
                    search("idtype-value", {"type": "UIN", "value": number}),
                    sender_uri=f"{url}/registry/on-search",
                )
                acked = (
                    await client.post("/registry/search", json=body, headers=_dci(token, OWNER))
                ).json()["message"]
            assert acked["ack_status"] == "ACK"
            receiver.refuse = 0
            async with running(create_registry(settings)) as client:
                [callback] = await receiver.wait_for("on-search")
                status = await client.post(
                    "/registry/sync/txn/status",
                    json=envelope(
                        "txn-status",
                        {
                            "transaction_id": "t-status",
                            "txnstatus_request": {
                                "reference_id": "r-status",
                                "txn_type": "search",
                                "attribute_type": "transaction_id",
                                "attribute_value": body["message"]["transaction_id"],
                            },
                        },
                    ),
                    headers=_dci(token, OWNER),
                )
        assert callback["message"]["correlation_id"] == acked["correlation_id"]
        assert callback["message"]["transaction_id"] == body["message"]["transaction_id"]
        assert (
            callback["message"]["search_response"][0]["data"]["reg_records"][0]["@id"]
            == household_id
        )
        txn = status.json()["message"]["txnstatus_response"]["txn_status"]
        assert (txn["correlation_id"], txn["search_response"][0]["status"]) == (
            acked["correlation_id"],
            "succ",
        )

    async def test_another_clients_transactions_and_subscriptions_read_as_unknown(
        self, registry_settings: RegistrySettings, token: Token
    ) -> None:
        with receiving() as (receiver, url):
            async with running(create_registry(settings_for_dci(registry_settings))) as client:
                await _subscribe(
                    client, token, OWNER, {"type": "HOUSEHOLD_ID", "value": "h"}, f"{url}/s"
                )
                [subscribed] = await receiver.wait_for("on-subscribe")
                code = subscribed["message"]["subscribe_response"][0]["subscriptions"][0]["code"]
                await client.post(
                    "/registry/unsubscribe",
                    json=envelope(
                        "unsubscribe",
                        {
                            "transaction_id": "u",
                            "timestamp": "2026-11-29T00:00:00Z",
                            "subscription_codes": [code],
                        },
                        sender_uri=f"{url}/u",
                    ),
                    headers=_dci(token, INTRUDER, "dci:subscribe"),
                )
                [unsubscribed] = await receiver.wait_for("on-unsubscribe")
        assert unsubscribed["message"]["status"] == "rjct"
        assert unsubscribed["message"]["status_reason_code"] == "rjct.subscription_code.invalid"
        [row] = [
            r for r in await _rows(registry_settings, dci_store.subscription) if r["code"] == code
        ]
        assert row["status"] == "subscribe"
        assert SENDER == row["sender_id"]

    async def test_txn_status_shows_a_reply_only_to_a_token_covering_its_regions(
        self, registry_settings: RegistrySettings, token: Token
    ) -> None:
        # A region is not a client's property: the same client with a 4101 token sees nothing.
        same_client = {"client_id": "dci-both"}
        async with running(create_registry(settings_for_dci(registry_settings))) as client:
            household_id, _ = await _file(client, token, OWNER, 631)
            asked = envelope(
                "search", search("idtype-value", {"type": "HOUSEHOLD_ID", "value": household_id})
            )
            await client.post(
                "/registry/sync/search",
                json=asked,
                headers=bearer(token("dci:search", regions=["4113"], **same_client)),
            )
            answers = {}
            for regions in (["4113"], ["4101"], ["41"]):
                status = envelope(
                    "txn-status",
                    {
                        "transaction_id": "t",
                        "txnstatus_request": {
                            "reference_id": "r",
                            "txn_type": "search",
                            "attribute_type": "transaction_id",
                            "attribute_value": asked["message"]["transaction_id"],
                        },
                    },
                )
                answer = await client.post(
                    "/registry/sync/txn/status",
                    json=status,
                    headers=bearer(token("dci:search", regions=regions, **same_client)),
                )
                answers[regions[0]] = answer.json()
        assert household_id in str(answers["4113"]) and household_id in str(answers["41"])
        assert household_id not in str(answers["4101"])
        assert answers["4101"]["header"]["status"] == "rjct"


class TestDelivery:
    async def test_notifications_are_retried_in_order_and_dead_after_the_last_attempt(
        self, registry_settings: RegistrySettings, token: Token
    ) -> None:
        settings = settings_for_dci(registry_settings, dci_delivery_max_attempts=3)
        whole_province = [
            {
                "seq_num": 1,
                "expression1": {
                    "attribute_name": "region",
                    "operator": "eq",
                    "attribute_value": "41",
                },
            }
        ]
        with receiving() as (receiver, url):
            async with running(create_registry(settings)) as client:
                await client.post(
                    "/registry/subscribe",
                    json=envelope(
                        "subscribe", subscribe("REGISTER", whole_province), sender_uri=f"{url}/n"
                    ),
                    headers=_dci(token, OWNER, "dci:subscribe"),
                )
                await receiver.wait_for("on-subscribe")
                # Down for two attempts: the first notify waits, the second waits behind it.
                receiver.refuse = 2
                first, _ = await _file(client, token, OWNER, 641)
                second, _ = await _file(client, token, OWNER, 642)
                delivered = await receiver.wait_for("notify", 2)
                # Down for good: the third is dead after three attempts, and kept.
                receiver.refuse = 10**6
                third, _ = await _file(client, token, OWNER, 643)
                for _ in range(200):
                    rows = await _rows(registry_settings, dci_store.delivery)
                    if any(r["status"] == "dead" for r in rows):
                        break
                    await asyncio.sleep(0.05)
        ids = [b["message"]["notify_event"][0]["data"]["reg_records"]["@id"] for b in delivered]
        assert ids == [first, second]
        notifies = sorted((r for r in rows if r["action"] == "notify"), key=lambda r: r["id"])
        assert [(r["status"], r["attempts"]) for r in notifies] == [
            ("delivered", 3),
            ("delivered", 1),
            ("dead", 3),
        ]
        assert notifies[2]["last_error"].startswith("HTTP 503")
        assert third in str(notifies[2]["body"])


class TestQueries:
    async def test_predicates_expressions_pagination_and_sort_over_the_file(
        self, registry_settings: RegistrySettings, token: Token
    ) -> None:
        young = identity_number(region=OWNER, birth=date(date.today().year - 19, 1, 1), serial=652)
        async with running(create_registry(settings_for_dci(registry_settings))) as client:
            alone, _ = await _file(client, token, OWNER, 651)
            family = await client.post(
                "/v1/households",
                json=household_body(
                    OWNER,
                    head_number=identity_number(region=OWNER, serial=653),
                    members=[{"name": "李小青", "identity_number": young, "relation": "child"}],
                ),
                headers=bearer(token("registry:write", regions=["4113"])),
            )
            with_child = family.json()["id"]

            async def found(query_type: str, query: Any, **criteria: Any) -> httpx.Response:
                return await client.post(
                    "/registry/sync/search",
                    json=envelope("search", search(query_type, query, **criteria)),
                    headers=_dci(token, OWNER),
                )

            def predicate(name: str, operator: str, value: Any) -> list[dict[str, Any]]:
                return [
                    {
                        "seq_num": 1,
                        "expression1": {
                            "attribute_name": name,
                            "operator": operator,
                            "attribute_value": value,
                        },
                    }
                ]

            under_25 = await found("predicate", predicate("age", "lt", "25"))
            pairs = await found(
                "expression",
                {
                    "type": "ns:org:QueryType:expression",
                    "value": {
                        "expression": {
                            "collection": "Group",
                            "query": {"$and": [{"group_size": {"$gte": 2}}, {"region": "4113"}]},
                        }
                    },
                },
            )
            paged = await found(
                "predicate",
                predicate("status", "eq", "applied"),
                sort=[{"attribute_name": "group_size", "sort_order": "desc"}],
                pagination={"page_size": 1, "page_number": 2},
            )
            members = await found(
                "idtype-value",
                {"type": "HOUSEHOLD_ID", "value": with_child},
                response_entity="Member",
            )
            unknown = await found("predicate", predicate("poverty_score", "lt", "2.5"))
        assert [r["@id"] for r in _records(under_25)] == [with_child]
        assert [r["@id"] for r in _records(pairs)] == [with_child]
        assert [r["@id"] for r in _records(paged)] == [alone]
        assert paged.json()["message"]["search_response"][0]["pagination"] == {
            "page_size": 1,
            "page_number": 2,
            "total_count": 2,
        }
        assert [m["relationship_head"] for m in _records(members)] == ["self", "child"]
        refused = unknown.json()["message"]["search_response"][0]
        assert refused["status_reason_code"] == "rjct.search_criteria.invalid"
        assert "poverty_score" in refused["status_reason_message"]
