"""The DCI use cases over the registry's file: search, subscribe, unsubscribe, txn status.

Each takes the request's unit of work and never commits it; each answers the `message` of its
on-* callback (which sync endpoints answer directly and async ones deliver later).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, func, select

from services.registry import store as registry_store
from services.registry.dci import query, store
from services.registry.dci.envelope import (
    SearchItem,
    SearchRequest,
    SubscribeRequest,
    TxnStatusRequest,
    UnsubscribeRequest,
    now_iso,
)
from services.registry.dci.mapping import group_record, member_record
from services.registry.service import PII_READ
from shared import audit
from shared.auth import Principal
from shared.crypto import Keyring
from shared.db import UnitOfWork, region_condition
from shared.events.envelope import new_event_id
from shared.observability import current_traceparent, trace_id_of
from shared.regions import normalize_prefix

REG_TYPE = "ns:org:RegistryType:Social"
DEFAULT_PAGE_SIZE = 50
# Event names of the registry's household events as the DCI event types they notify.
EVENT_TYPES = {
    "applied": "REGISTER",
    "member_added": "NewHouseHoldMember",
    "member_removed": "UPDATE",
    "changed": "UPDATE",
    "reviewed": "UPDATE",
    "approved": "UPDATE",
    "noticed": "UPDATE",
    "objected": "UPDATE",
    "enrolled": "UPDATE",
    "rejected": "UPDATE",
    "exited": "DEREGISTER",
}
SUBSCRIBABLE = frozenset(EVENT_TYPES.values())


@dataclass(frozen=True)
class Caller:
    """Who asks: the token's client, its scopes and regions, and why (for clear reads)."""

    principal: Principal
    sender_id: str
    keyring: Keyring
    today: date
    purpose: str | None

    @property
    def clear(self) -> bool:
        return PII_READ in self.principal.scopes


def region_covered(prefix: str, regions: Sequence[str]) -> bool:
    """Whether everything under `prefix` lies under one of `regions`."""
    return any(normalize_prefix(prefix).startswith(normalize_prefix(r)) for r in regions)


def _consent_purpose(item: SearchItem) -> str | None:
    """The DCI way of saying why: consent or authorize `purpose.text` (or `.code`)."""
    for grant in (item.search_criteria.consent, item.search_criteria.authorize):
        purpose = (grant or {}).get("purpose")
        if isinstance(purpose, dict):
            text = purpose.get("text") or purpose.get("code")
            if isinstance(text, str) and text.strip():
                return text.strip()[:500]
    return None


def _rejected(item: SearchItem, reason: str, message: str) -> dict[str, Any]:
    return {
        "reference_id": item.reference_id,
        "timestamp": now_iso(),
        "status": "rjct",
        "status_reason_code": reason,
        "status_reason_message": message[:999],
    }


async def _search_one(
    uow: UnitOfWork, caller: Caller, item: SearchItem, *, now: datetime
) -> dict[str, Any]:
    criteria = item.search_criteria
    purpose = caller.purpose or _consent_purpose(item)
    if caller.clear and not purpose:
        return _rejected(
            item,
            "rjct.search_criteria.invalid",
            "a search with pii:read answers identity numbers in clear and needs a purpose: the "
            "Bangfu-Purpose header or consent.purpose.text; it is kept in the audit log",
        )
    try:
        where = and_(
            region_condition(registry_store.household.c.region, caller.principal.regions),
            query.condition(
                criteria.query_type, criteria.query, keyring=caller.keyring, today=caller.today
            ),
        )
        ordering = query.order_by(criteria.sort)
    except query.QueryNotSupported as exc:
        return _rejected(item, "rjct.search_criteria.invalid", str(exc))
    page_size = criteria.pagination.page_size if criteria.pagination else DEFAULT_PAGE_SIZE
    page_number = criteria.pagination.page_number if criteria.pagination else 1
    session = uow.session
    household = registry_store.household
    total = (
        await session.execute(select(func.count()).select_from(household).where(where))
    ).scalar_one()
    rows = [
        dict(r)
        for r in (
            await session.execute(
                select(household)
                .where(where)
                .order_by(*ordering)
                .limit(page_size)
                .offset((page_number - 1) * page_size)
            )
        ).mappings()
    ]
    members = await registry_store.get_members_of(session, [r["id"] for r in rows]) if rows else {}
    keyring = caller.keyring if caller.clear else None
    if caller.clear:
        for row in rows:
            await audit.append(
                session,
                client_id=caller.principal.client_id,
                action="household.pii_read",
                target=row["id"],
                outcome="success",
                purpose=purpose,
                trace_id=trace_id_of(current_traceparent()),
                detail={
                    "via": "dci.search",
                    "reference_id": item.reference_id,
                    "fields": ["members.identity_number", "members.birth_date", "members.phone"],
                },
                profile=caller.keyring.profile,
                now=now,
            )
    if criteria.response_entity == "Member":
        records = [
            member_record(m, keyring=keyring, today=caller.today)
            for r in rows
            for m in members.get(r["id"], [])
        ]
    else:
        records = [
            group_record(r, members=members.get(r["id"], []), keyring=keyring, today=caller.today)
            for r in rows
        ]
    return {
        "reference_id": item.reference_id,
        "timestamp": now_iso(),
        "status": "succ",
        "data": {
            "version": "1.0.0",
            "reg_type": REG_TYPE,
            "reg_record_type": criteria.response_entity,
            "reg_records": records,
        },
        "pagination": {"page_size": page_size, "page_number": page_number, "total_count": total},
        **({"locale": item.locale} if item.locale else {}),
    }


async def search(
    uow: UnitOfWork, caller: Caller, request: SearchRequest, *, correlation_id: str, now: datetime
) -> dict[str, Any]:
    """The SearchResponse message, each search_request answered in turn."""
    return {
        "transaction_id": request.transaction_id,
        "correlation_id": correlation_id,
        "search_response": [
            await _search_one(uow, caller, item, now=now) for item in request.search_request
        ],
    }


def _filter_condition(criteria: Any, caller: Caller) -> tuple[str, Any]:
    """A subscription's filter, checked now so that a filter never fails at notify time."""
    raw = criteria.filter
    filter_type = criteria.filter_type or (
        "predicate"
        if isinstance(raw, list)
        else "expression"
        if isinstance(raw, dict) and isinstance(raw.get("value"), dict)
        else "idtype-value"
    )
    if filter_type == "graphql":
        raise query.QueryNotSupported("graphql filters are not supported")
    query.condition(filter_type, raw, keyring=caller.keyring, today=caller.today)
    return filter_type, raw


async def subscribe(
    uow: UnitOfWork,
    caller: Caller,
    request: SubscribeRequest,
    *,
    sender_uri: str | None,
    correlation_id: str,
    now: datetime,
) -> dict[str, Any]:
    """The SubscribeResponse message: one subscription code per accepted request."""
    answers = []
    for item in request.subscribe_request:
        criteria = item.subscribe_criteria
        base: dict[str, Any] = {"reference_id": item.reference_id, "timestamp": now_iso()}
        if criteria.reg_event_type not in SUBSCRIBABLE:
            answers.append(
                {
                    **base,
                    "status": "rjct",
                    "status_reason_code": "rjct.notify_types.invalid",
                    "status_reason_message": "reg_event_type is one of "
                    + ", ".join(sorted(SUBSCRIBABLE)),
                }
            )
            continue
        if criteria.notify_record_type not in ("Group", "Member"):
            answers.append(
                {
                    **base,
                    "status": "rjct",
                    "status_reason_code": "rjct.notify_details.invalid",
                    "status_reason_message": "notify_record_type is Group or Member",
                }
            )
            continue
        try:
            filter_type, raw = _filter_condition(criteria, caller)
        except query.QueryNotSupported as exc:
            answers.append(
                {
                    **base,
                    "status": "rjct",
                    "status_reason_code": "rjct.notify_details.invalid",
                    "status_reason_message": str(exc)[:999],
                }
            )
            continue
        code = f"sub-{new_event_id()}"
        await store.add_subscription(
            uow.session,
            {
                "code": code,
                "client_id": caller.principal.client_id,
                "sender_id": caller.sender_id,
                "sender_uri": sender_uri,
                "regions": list(caller.principal.regions),
                "event_type": criteria.reg_event_type,
                "filter_type": filter_type,
                "filter": raw,
                "record_type": criteria.notify_record_type,
                "status": "subscribe",
                "created_at": now,
            },
        )
        answers.append(
            {
                **base,
                "status": "succ",
                "subscriptions": [
                    {
                        "code": code,
                        "status": "subscribe",
                        "timestamp": now_iso(),
                        "reg_type": REG_TYPE,
                        "reg_event_type": criteria.reg_event_type,
                        "filter_type": filter_type,
                        "filter": raw,
                        "notify_record_type": criteria.notify_record_type,
                    }
                ],
            }
        )
    return {
        "transaction_id": request.transaction_id,
        "correlation_id": correlation_id,
        "subscribe_response": answers,
    }


async def unsubscribe(
    uow: UnitOfWork,
    caller: Caller,
    request: UnsubscribeRequest,
    *,
    correlation_id: str,
    now: datetime,
) -> dict[str, Any]:
    """The UnSubscribeResponse message. Another client's code reads as unknown."""
    found = await store.get_subscriptions(uow.session, request.subscription_codes)
    statuses = []
    refused = []
    for code in request.subscription_codes:
        row = found.get(code)
        if row is None or row["client_id"] != caller.principal.client_id:
            refused.append(code)
            continue
        if row["status"] == "subscribe":
            await store.end_subscription(uow.session, code, now=now)
        statuses.append({"code": code, "status": "unsubscribe"})
    answer: dict[str, Any] = {
        "transaction_id": request.transaction_id,
        "correlation_id": correlation_id,
        "timestamp": now_iso(),
        "status": "succ" if statuses else "rjct",
        "subscription_status": statuses,
    }
    if refused:
        answer["status_reason_code"] = "rjct.subscription_code.invalid"
        answer["status_reason_message"] = (
            f"no subscription of this client has the code {', '.join(refused)}"[:999]
        )
    return answer


def _households_in(reply: dict[str, Any]) -> list[str]:
    """The households a search reply shows (a Group's id, a Member's household)."""
    found: list[str] = []
    for item in reply.get("search_response", []):
        for record in (item.get("data") or {}).get("reg_records", []):
            if record.get("@type") == "Group":
                found.append(record["@id"])
            else:
                attributes = {
                    a["name"]: a["value"] for a in record.get("additional_attributes", [])
                }
                found.append(str(attributes.get("household_id")))
    return list(dict.fromkeys(found))


def _unknown(request: TxnStatusRequest, correlation_id: str, why: str) -> dict[str, Any]:
    criteria = request.txnstatus_request
    return {
        "transaction_id": request.transaction_id,
        "correlation_id": correlation_id,
        "search_response": [
            {
                "reference_id": criteria.reference_id,
                "timestamp": now_iso(),
                "status": "rjct",
                "status_reason_code": "rjct.reference_id.invalid",
                "status_reason_message": why[:999],
            }
        ],
    }


async def txn_status(
    uow: UnitOfWork,
    caller: Caller,
    request: TxnStatusRequest,
    *,
    correlation_id: str,
    now: datetime,
) -> tuple[str, dict[str, Any], bool]:
    """(header status, TxnStatusResponse message, whether it holds identity numbers in clear).

    Only the caller's own transactions, asked with regions its token covers; a reply kept
    sealed (read with pii:read) is opened only for a caller with pii:read and a purpose, and
    that read is audited like the search's.
    """
    criteria = request.txnstatus_request
    values: Sequence[str] = (
        criteria.attribute_value
        if isinstance(criteria.attribute_value, list)
        else [criteria.attribute_value]
    )
    rows = await store.find_transactions(
        uow.session,
        client_id=caller.principal.client_id,
        attribute=criteria.attribute_type,
        values=values,
    )
    wanted = {"search": ("search",), "subscribe": ("subscribe", "unsubscribe"), "receipt": ()}[
        criteria.txn_type
    ]
    rows = [
        r
        for r in rows
        if r["action"] in wanted
        and all(region_covered(p, caller.principal.regions) for p in r["regions"])
    ]
    answer = {"transaction_id": request.transaction_id, "correlation_id": correlation_id}
    if not rows:
        status = _unknown(
            request,
            correlation_id,
            f"no {criteria.txn_type} transaction of this client has that {criteria.attribute_type}",
        )
        return (
            "rjct",
            {**answer, "txnstatus_response": {"txn_type": criteria.txn_type, "txn_status": status}},
            False,
        )
    row = rows[-1]
    sealed = "sealed" in row["reply"]
    if sealed and not (caller.clear and caller.purpose):
        status = _unknown(
            request,
            correlation_id,
            "the reply holds identity numbers in clear: ask with pii:read and a Bangfu-Purpose",
        )
        return (
            "rjct",
            {**answer, "txnstatus_response": {"txn_type": criteria.txn_type, "txn_status": status}},
            False,
        )
    reply = store.unseal(caller.keyring, row["reply"])
    if sealed:
        for household_id in _households_in(reply):
            await audit.append(
                uow.session,
                client_id=caller.principal.client_id,
                action="household.pii_read",
                target=household_id,
                outcome="success",
                purpose=caller.purpose,
                trace_id=trace_id_of(current_traceparent()),
                detail={"via": "dci.txn_status", "correlation_id": row["correlation_id"]},
                profile=caller.keyring.profile,
                now=now,
            )
    status = {
        "transaction_id": row["transaction_id"],
        "correlation_id": row["correlation_id"],
        "search_response": reply.get("search_response", []),
    }
    return (
        "succ",
        {**answer, "txnstatus_response": {"txn_type": criteria.txn_type, "txn_status": status}},
        sealed,
    )
