"""The DCI social registry endpoints (`/registry/...`) and the registry's signing keys.

Authentication is the suite's: a bearer token with `dci:search` (search, txn status) or
`dci:subscribe` (subscribe, unsubscribe), confined to its `regions`; `pii:read` with a purpose
unmasks identity numbers, as on the REST API. Everything past authentication answers the spec's
`Response`: `ACK` with a correlation id, or `ERR` with one of the spec's error codes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from services.registry.dci import operations, store
from services.registry.dci.delivery import DeliveryWorker, DestinationPolicy, DestinationRefused
from services.registry.dci.envelope import (
    DciError,
    Envelope,
    ErrorCode,
    Header,
    SearchRequest,
    SubscribeRequest,
    TxnStatusRequest,
    UnsubscribeRequest,
    ack,
    callback_header,
    error_answer,
    new_correlation_id,
)
from services.registry.dci.signing import (
    SignatureInvalid,
    SignatureMissing,
    Signer,
    public_key_from_text,
    verify,
)
from shared.auth import Principal, purpose, require
from shared.db import UnitOfWork
from shared.service import UnitOfWorkDep

SEARCH_SCOPE = "dci:search"
SUBSCRIBE_SCOPE = "dci:subscribe"
SUPPORTED_VERSIONS = frozenset({"1.0.0"})
M = TypeVar("M", bound=BaseModel)

router = APIRouter(tags=["dci"])
Searcher = Annotated[Principal, Depends(require(SEARCH_SCOPE))]
Subscriber = Annotated[Principal, Depends(require(SUBSCRIBE_SCOPE))]
Purpose = Annotated[
    str | None,
    purpose(
        "Why the caller reads identity numbers in clear: with pii:read, this header or the "
        "search's consent.purpose.text is required, and recorded with every clear read"
    ),
]


@dataclass
class DciState:
    """What the DCI endpoints need from the app: keys, sender keys, callback policy, worker."""

    signer: Signer
    sender_keys: dict[str, Any]
    require_signatures: bool
    policy: DestinationPolicy
    worker: DeliveryWorker | None = None


def _state(request: Request) -> DciState:
    state: DciState = request.app.state.dci
    return state


def load_sender_keys(configured: dict[str, str]) -> dict[str, Any]:
    return {sender: public_key_from_text(text) for sender, text in configured.items()}


def _errors(exc: ValidationError, prefix: str) -> str:
    return "; ".join(
        f"{prefix}{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:10]
    )


async def _receive(request: Request, action: str) -> tuple[Header, dict[str, Any]]:
    """The envelope checked: shape, header, action, version, signature, no encryption."""
    try:
        body = await request.json()
    except ValueError as exc:
        raise DciError(ErrorCode.BAD_REQUEST, "the body is not JSON") from exc
    try:
        envelope = Envelope.model_validate(body)
        header = Header.model_validate(envelope.header)
    except ValidationError as exc:
        raise DciError(ErrorCode.BAD_REQUEST, _errors(exc, "")) from exc
    if header.action != action:
        raise DciError(
            ErrorCode.BAD_REQUEST, f"header.action must be {action!r} here (rjct.action.invalid)"
        )
    if header.version not in SUPPORTED_VERSIONS:
        raise DciError(ErrorCode.VERSION, f"version {header.version} is not supported; use 1.0.0")
    state = _state(request)
    key = state.sender_keys.get(header.sender_id)
    if key is not None:
        try:
            verify(
                envelope.signature,
                sender_id=header.sender_id,
                header=envelope.header,
                message=envelope.message,
                key=key,
            )
        except SignatureMissing as exc:
            raise DciError(ErrorCode.SIGNATURE_MISSING, str(exc)) from exc
        except SignatureInvalid as exc:
            raise DciError(ErrorCode.SIGNATURE_INVALID, str(exc)) from exc
    elif state.require_signatures:
        raise DciError(
            ErrorCode.SIGNATURE_INVALID,
            f"no signing key is registered for sender {header.sender_id}: "
            "its signature cannot be verified",
        )
    if header.is_msg_encrypted:
        raise DciError(ErrorCode.ENCRYPTION, "encrypted messages are not accepted by this registry")
    return header, envelope.message


def _message(model: type[M], message: dict[str, Any]) -> M:
    try:
        return model.model_validate(message)
    except ValidationError as exc:
        raise DciError(ErrorCode.BAD_REQUEST, _errors(exc, "message.")) from exc


def _sender_uri(request: Request, header: Header) -> str | None:
    """Where the callback goes: the header's sender_uri, if the destination policy allows it."""
    if header.sender_uri is None:
        return None  # no callback: the sender polls txn/status
    try:
        _state(request).policy.check_url(header.sender_uri)
    except DestinationRefused as exc:
        raise DciError(ErrorCode.SENDER_URI, str(exc)) from exc
    return header.sender_uri


def _caller(
    request: Request, principal: Principal, header: Header, why: str | None
) -> operations.Caller:
    return operations.Caller(
        principal=principal,
        sender_id=header.sender_id,
        keyring=request.app.state.keyring,
        today=date.today(),
        purpose=why,
    )


Handler = Callable[..., Awaitable[JSONResponse]]


def _answering_errors(handler: Handler) -> Handler:
    """A DciError past authentication answers `ack_status: ERR` (HTTP 200, the spec's
    default Response), nothing of the request kept."""

    async def wrapped(request: Request, uow: UnitOfWork, *args: Any, **kwargs: Any) -> JSONResponse:
        try:
            return await handler(request, uow, *args, **kwargs)
        except DciError as exc:
            await uow.rollback()
            return JSONResponse(error_answer(exc))

    return wrapped


async def _record(
    uow: UnitOfWork,
    request: Request,
    *,
    principal: Principal,
    header: Header,
    action: str,
    transaction_id: str,
    correlation_id: str,
    reference_ids: list[str],
    reply: dict[str, Any],
    status: str,
    callback: str | None,
    now: datetime,
    clear: bool = False,
) -> dict[str, Any]:
    """Keep the transaction and its reply (sealed when it holds identity numbers in clear);
    queue the callback. Returns the callback header."""
    kept = store.seal(request.app.state.keyring, reply) if clear else {"message": reply}
    await store.add_transaction(
        uow.session,
        {
            "correlation_id": correlation_id,
            "transaction_id": transaction_id,
            "client_id": principal.client_id,
            "sender_id": header.sender_id,
            "regions": list(principal.regions),
            "action": action,
            "status": status,
            "reference_ids": reference_ids,
            "reply": kept,
            "created_at": now,
        },
    )
    total = len(reference_ids) or 1
    reply_header = callback_header(
        callback or f"on-{action}",
        sender_id=_state(request).signer.subscriber_id,
        receiver_id=header.sender_id,
        status=status,
        total=total,
        completed=total,
    )
    if callback is not None:
        sender_uri = _sender_uri(request, header)
        if sender_uri is not None:
            await store.add_delivery(
                uow.session,
                ordering_key=f"txn:{correlation_id}",
                url=sender_uri,
                action=callback,
                body={"header": reply_header, **kept},
                now=now,
            )
    return reply_header


async def _committed_ack(uow: UnitOfWork, request: Request, correlation_id: str) -> JSONResponse:
    await uow.commit()
    worker = _state(request).worker
    if worker is not None:
        worker.wake()
    return JSONResponse(ack(correlation_id))


def _search_status(reply: dict[str, Any]) -> str:
    return "succ" if any(r["status"] == "succ" for r in reply["search_response"]) else "rjct"


@_answering_errors
async def _search(
    request: Request, uow: UnitOfWork, principal: Principal, why: str | None, *, sync: bool
) -> JSONResponse:
    header, message = await _receive(request, "search")
    search = _message(SearchRequest, message)
    if not sync:
        _sender_uri(request, header)  # refused before any work is done
    now = datetime.now(UTC)
    correlation_id = new_correlation_id()
    caller = _caller(request, principal, header, why)
    reply = await operations.search(uow, caller, search, correlation_id=correlation_id, now=now)
    reply_header = await _record(
        uow,
        request,
        principal=principal,
        header=header,
        action="search",
        transaction_id=search.transaction_id,
        correlation_id=correlation_id,
        reference_ids=[item.reference_id for item in search.search_request],
        reply=reply,
        status=_search_status(reply),
        callback=None if sync else "on-search",
        now=now,
        clear=caller.clear,
    )
    if not sync:
        return await _committed_ack(uow, request, correlation_id)
    await uow.commit()
    signature = _state(request).signer.sign(reply_header, reply)
    return JSONResponse({"signature": signature, "header": reply_header, "message": reply})


@_answering_errors
async def _txn_status(
    request: Request, uow: UnitOfWork, principal: Principal, why: str | None, *, sync: bool
) -> JSONResponse:
    header, message = await _receive(request, "txn-status")
    asked = _message(TxnStatusRequest, message)
    if not sync:
        _sender_uri(request, header)
    now = datetime.now(UTC)
    correlation_id = new_correlation_id()
    status, reply, clear = await operations.txn_status(
        uow, _caller(request, principal, header, why), asked, correlation_id=correlation_id, now=now
    )
    reply_header = await _record(
        uow,
        request,
        principal=principal,
        header=header,
        action="txn-status",
        transaction_id=asked.transaction_id,
        correlation_id=correlation_id,
        reference_ids=[asked.txnstatus_request.reference_id],
        reply=reply,
        status=status,
        callback=None if sync else "txn-on-status",
        now=now,
        clear=clear,
    )
    if not sync:
        return await _committed_ack(uow, request, correlation_id)
    reply_header["action"] = "txn-on-status"
    await uow.commit()
    signature = _state(request).signer.sign(reply_header, reply)
    return JSONResponse({"signature": signature, "header": reply_header, "message": reply})


@_answering_errors
async def _subscribe(
    request: Request, uow: UnitOfWork, principal: Principal, why: str | None
) -> JSONResponse:
    header, message = await _receive(request, "subscribe")
    asked = _message(SubscribeRequest, message)
    sender_uri = _sender_uri(request, header)
    now = datetime.now(UTC)
    correlation_id = new_correlation_id()
    reply = await operations.subscribe(
        uow,
        _caller(request, principal, header, why),
        asked,
        sender_uri=sender_uri,
        correlation_id=correlation_id,
        now=now,
    )
    status = "succ" if any(r["status"] == "succ" for r in reply["subscribe_response"]) else "rjct"
    await _record(
        uow,
        request,
        principal=principal,
        header=header,
        action="subscribe",
        transaction_id=asked.transaction_id,
        correlation_id=correlation_id,
        reference_ids=[item.reference_id for item in asked.subscribe_request],
        reply=reply,
        status=status,
        callback="on-subscribe",
        now=now,
    )
    return await _committed_ack(uow, request, correlation_id)


@_answering_errors
async def _unsubscribe(
    request: Request, uow: UnitOfWork, principal: Principal, why: str | None
) -> JSONResponse:
    header, message = await _receive(request, "unsubscribe")
    asked = _message(UnsubscribeRequest, message)
    _sender_uri(request, header)
    now = datetime.now(UTC)
    correlation_id = new_correlation_id()
    reply = await operations.unsubscribe(
        uow, _caller(request, principal, header, why), asked, correlation_id=correlation_id, now=now
    )
    await _record(
        uow,
        request,
        principal=principal,
        header=header,
        action="unsubscribe",
        transaction_id=asked.transaction_id,
        correlation_id=correlation_id,
        reference_ids=[],
        reply=reply,
        status=reply["status"],
        callback="on-unsubscribe",
        now=now,
    )
    return await _committed_ack(uow, request, correlation_id)


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "ACK (async) or the on-* answer (sync); ERR with the spec's error code"},
    401: {"description": "no valid bearer token"},
    403: {"description": "the token lacks the scope"},
}


@router.post(
    "/registry/search",
    summary="DCI async search: ACK, then on-search to sender_uri",
    responses=_RESPONSES,
)
async def async_search(
    request: Request, uow: UnitOfWorkDep, principal: Searcher, why: Purpose
) -> JSONResponse:
    return await _search(request, uow, principal, why, sync=False)


@router.post(
    "/registry/sync/search", summary="DCI sync search: the on-search answer", responses=_RESPONSES
)
async def sync_search(
    request: Request, uow: UnitOfWorkDep, principal: Searcher, why: Purpose
) -> JSONResponse:
    return await _search(request, uow, principal, why, sync=True)


@router.post(
    "/registry/subscribe", summary="DCI subscribe: ACK, then on-subscribe", responses=_RESPONSES
)
async def subscribe(
    request: Request, uow: UnitOfWorkDep, principal: Subscriber, why: Purpose
) -> JSONResponse:
    return await _subscribe(request, uow, principal, why)


@router.post(
    "/registry/unsubscribe",
    summary="DCI unsubscribe: ACK, then on-unsubscribe",
    responses=_RESPONSES,
)
async def unsubscribe(
    request: Request, uow: UnitOfWorkDep, principal: Subscriber, why: Purpose
) -> JSONResponse:
    return await _unsubscribe(request, uow, principal, why)


@router.post(
    "/registry/txn/status",
    summary="DCI async txn status: ACK, then txn/on-status",
    responses=_RESPONSES,
)
async def async_txn_status(
    request: Request, uow: UnitOfWorkDep, principal: Searcher, why: Purpose
) -> JSONResponse:
    return await _txn_status(request, uow, principal, why, sync=False)


@router.post(
    "/registry/sync/txn/status",
    summary="DCI sync txn status: the txn-on-status answer",
    responses=_RESPONSES,
)
async def sync_txn_status(
    request: Request, uow: UnitOfWorkDep, principal: Searcher, why: Purpose
) -> JSONResponse:
    return await _txn_status(request, uow, principal, why, sync=True)


@router.get(
    "/.well-known/jwks.json",
    summary="The registry's public keys: DCI answers and callbacks are signed with them",
)
async def jwks(request: Request) -> dict[str, Any]:
    return _state(request).signer.jwks()
