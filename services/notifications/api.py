"""The notifications service's HTTP routes and the table mapping its errors to problem+json."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from services.notifications import service, webhooks
from services.notifications.domain.events import NOTIFICATION_EVENTS
from services.notifications.history import WindowTooLarge, events_between
from services.notifications.schemas import (
    AttemptOut,
    DeliveryPage,
    InboxOut,
    MessageOut,
    ReplayIn,
    ReplayOut,
    SubscriptionIn,
    SubscriptionOut,
)
from shared import idempotency
from shared.auth import Principal, require
from shared.crypto import blind_index
from shared.events.schemas import schema_router
from shared.problems import ErrorTable, Problem, invalid_field
from shared.regions import InvalidRegion
from shared.service import UnitOfWorkDep

router = APIRouter(prefix="/v1", tags=["notifications"])
events_router = schema_router("notifications", "notification", NOTIFICATION_EVENTS)

ERRORS: ErrorTable = {
    InvalidRegion: invalid_field("regions"),
    webhooks.InvalidRequest: invalid_field(None),
    webhooks.RegionNotAllowed: lambda exc: Problem(
        403, "region-not-allowed", f"the token does not cover region {exc}"
    ),
    webhooks.SubscriptionNotFound: lambda exc: Problem(
        404, "not-found", f"subscription {exc} not found"
    ),
    webhooks.DeliveryNotFound: lambda exc: Problem(404, "not-found", f"delivery {exc} not found"),
    service.MessageNotFound: lambda exc: Problem(404, "not-found", f"message {exc} not found"),
    WindowTooLarge: lambda exc: Problem(
        422, "replay-window-too-large", f"{exc}; replay a narrower window"
    ),
}
REPLAY_LIMIT = 10_000

Admin = Annotated[Principal, Depends(require("notifications:admin"))]
# Message bodies say who is owed what: reading them by cause or household needs a scope.
Reader = Annotated[Principal, Depends(require("notifications:read"))]
# The inbox is the caller's own (its client id is the recipient): any valid token.
Caller = Annotated[Principal, Depends(require())]


def _json(body: Any, status_code: int = 200) -> JSONResponse:
    return JSONResponse(jsonable_encoder(body), status_code=status_code)


def _now() -> datetime:
    return datetime.now(UTC)


@router.post(
    "/subscriptions",
    status_code=201,
    response_model=SubscriptionOut,
    tags=["webhooks"],
    summary="Register a webhook: URL, secret, event types, region filter",
)
async def register(
    body: SubscriptionIn,
    request: Request,
    uow: UnitOfWorkDep,
    principal: Admin,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key", description="Retry safely: the same key replays the answer"
        ),
    ] = None,
) -> JSONResponse:
    keyring = request.app.state.keyring
    # The secret enters the digest only through a keyed index: stored digests reveal nothing.
    asked = body.model_dump(mode="json") | {
        "secret": blind_index(keyring, body.secret, purpose="webhook.secret")
    }
    digest = idempotency.request_hash(principal, "POST", request.url.path, asked)
    if idempotency_key:
        stored = await idempotency.replay(
            uow.session, client_id=principal.client_id, key=idempotency_key, digest=digest
        )
        if stored:
            return JSONResponse(stored.body, stored.status_code, headers=stored.headers)
    view = await webhooks.register_subscription(
        uow,
        principal=principal,
        keyring=keyring,
        destinations=request.app.state.destinations,
        url=str(body.url),
        secret=body.secret,
        event_types=body.event_types,
        regions=body.regions,
        department=body.department,
        now=_now(),
    )
    answer = jsonable_encoder(view)
    headers = {"Location": f"/v1/subscriptions/{view['id']}"}
    if idempotency_key:
        await idempotency.remember(
            uow.session,
            client_id=principal.client_id,
            key=idempotency_key,
            digest=digest,
            response=idempotency.StoredResponse(201, answer, headers),
        )
    await uow.commit()
    return JSONResponse(answer, status_code=201, headers=headers)


@router.get(
    "/subscriptions",
    response_model=list[SubscriptionOut],
    tags=["webhooks"],
    summary="The caller's webhooks",
)
async def list_subscriptions(uow: UnitOfWorkDep, principal: Admin) -> JSONResponse:
    return _json(await webhooks.list_subscriptions(uow, principal=principal))


@router.get(
    "/subscriptions/{subscription_id}",
    response_model=SubscriptionOut,
    tags=["webhooks"],
    summary="One webhook",
)
async def get_subscription(
    subscription_id: str, uow: UnitOfWorkDep, principal: Admin
) -> JSONResponse:
    row = await webhooks.own_subscription(uow, principal=principal, subscription_id=subscription_id)
    return _json(webhooks.subscription_view(row))


async def _set_status(
    uow: UnitOfWorkDep, principal: Principal, subscription_id: str, status: str
) -> JSONResponse:
    view = await webhooks.set_status(
        uow, principal=principal, subscription_id=subscription_id, status=status, now=_now()
    )
    await uow.commit()
    return _json(view)


@router.post(
    "/subscriptions/{subscription_id}/pause",
    response_model=SubscriptionOut,
    tags=["webhooks"],
    summary="Pause: deliveries keep queuing but are not sent",
)
async def pause(subscription_id: str, uow: UnitOfWorkDep, principal: Admin) -> JSONResponse:
    return await _set_status(uow, principal, subscription_id, "paused")


@router.post(
    "/subscriptions/{subscription_id}/resume",
    response_model=SubscriptionOut,
    tags=["webhooks"],
    summary="Resume: the queued deliveries go out, in order",
)
async def resume(
    subscription_id: str, request: Request, uow: UnitOfWorkDep, principal: Admin
) -> JSONResponse:
    response = await _set_status(uow, principal, subscription_id, "active")
    delivery = getattr(request.app.state, "delivery", None)
    if delivery is not None:
        delivery.wake()
    return response


@router.delete(
    "/subscriptions/{subscription_id}",
    status_code=204,
    tags=["webhooks"],
    summary="Delete: pending deliveries are cancelled; the log stays",
)
async def delete(subscription_id: str, uow: UnitOfWorkDep, principal: Admin) -> Response:
    await webhooks.set_status(
        uow, principal=principal, subscription_id=subscription_id, status="deleted", now=_now()
    )
    await uow.commit()
    return Response(status_code=204)


@router.get(
    "/subscriptions/{subscription_id}/deliveries",
    response_model=DeliveryPage,
    tags=["webhooks"],
    summary="The delivery log; `status=dead` lists the dead letters",
)
async def deliveries(
    subscription_id: str,
    uow: UnitOfWorkDep,
    principal: Admin,
    status: Annotated[str | None, Query(pattern="^(pending|delivered|dead|cancelled)$")] = None,
    after: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,  # the column is an INTEGER
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> JSONResponse:
    items = await webhooks.delivery_log(
        uow,
        principal=principal,
        subscription_id=subscription_id,
        status=status,
        after=after,
        limit=limit,
    )
    next_after = items[-1]["position"] if len(items) == limit else None
    return _json({"items": items, "next_after": next_after})


@router.get(
    "/subscriptions/{subscription_id}/deliveries/{delivery_id}/attempts",
    response_model=list[AttemptOut],
    tags=["webhooks"],
    summary="Every attempt of one delivery: status code, error, duration",
)
async def attempts(
    subscription_id: str, delivery_id: str, uow: UnitOfWorkDep, principal: Admin
) -> JSONResponse:
    return _json(
        await webhooks.delivery_attempts(
            uow, principal=principal, subscription_id=subscription_id, delivery_id=delivery_id
        )
    )


@router.post(
    "/subscriptions/{subscription_id}/replay",
    status_code=202,
    response_model=ReplayOut,
    tags=["webhooks"],
    summary="Deliver again every event of a time window (by event time)",
)
async def replay(
    subscription_id: str, body: ReplayIn, request: Request, uow: UnitOfWorkDep, principal: Admin
) -> JSONResponse:
    await webhooks.own_subscription(uow, principal=principal, subscription_id=subscription_id)
    history = await events_between(
        request.app.state.runtime.connected_js(),
        since=body.since,
        until=body.until,
        limit=REPLAY_LIMIT,
    )
    queued = await webhooks.replay(
        uow,
        principal=principal,
        subscription_id=subscription_id,
        since=body.since,
        until=body.until,
        history=history,
        now=_now(),
    )
    await uow.commit()
    delivery = getattr(request.app.state, "delivery", None)
    if delivery is not None:
        delivery.wake()
    return _json({"queued": queued}, 202)


@router.get(
    "/messages",
    response_model=list[MessageOut],
    tags=["messages"],
    summary="Messages of a cause (the event id that caused them) or a household, with status",
)
async def messages(
    uow: UnitOfWorkDep,
    principal: Reader,
    cause: str | None = None,
    household_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> JSONResponse:
    return _json(
        await service.messages_for(
            uow, principal=principal, cause=cause, household_id=household_id, limit=limit
        )
    )


@router.get(
    "/messages/{message_id}",
    response_model=MessageOut,
    tags=["messages"],
    summary="One message and its delivery status",
)
async def get_message(message_id: str, uow: UnitOfWorkDep, principal: Reader) -> JSONResponse:
    return _json(await service.message(uow, principal=principal, message_id=message_id))


@router.get(
    "/inbox",
    response_model=InboxOut,
    tags=["inbox"],
    summary="The caller's in-app inbox, newest first, with the unread count",
)
async def inbox(
    uow: UnitOfWorkDep,
    principal: Caller,
    unread: bool = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> JSONResponse:
    return _json(await service.inbox(uow, principal=principal, unread=unread, limit=limit))


@router.post(
    "/inbox/{message_id}/read",
    response_model=MessageOut,
    tags=["inbox"],
    summary="Mark a message read",
)
async def read(message_id: str, uow: UnitOfWorkDep, principal: Caller) -> JSONResponse:
    view = await service.mark_read(
        uow, principal=principal, message_id=message_id, read=True, now=_now()
    )
    await uow.commit()
    return _json(view)


@router.post(
    "/inbox/{message_id}/unread",
    response_model=MessageOut,
    tags=["inbox"],
    summary="Mark a message unread again",
)
async def unread(message_id: str, uow: UnitOfWorkDep, principal: Caller) -> JSONResponse:
    view = await service.mark_read(
        uow, principal=principal, message_id=message_id, read=False, now=_now()
    )
    await uow.commit()
    return _json(view)
