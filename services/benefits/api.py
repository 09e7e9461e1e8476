"""The benefits service's HTTP routes and its error table."""

import dataclasses
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from services.benefits import service
from services.benefits.domain.events import EVENT_TYPES
from services.benefits.domain.parameters import ParameterError
from services.benefits.schemas import (
    TEXT,
    ComputeIn,
    HouseholdPut,
    ParameterIn,
    PaymentIn,
    WhatIfIn,
)
from shared import idempotency
from shared.auth import Principal, purpose, require
from shared.events.asyncapi import asyncapi_document
from shared.events.envelope import event_type
from shared.events.schemas import data_schema
from shared.problems import ErrorTable, Problem, invalid_field
from shared.regions import InvalidRegion
from shared.registry_client import RegistryUnavailable
from shared.service import UnitOfWorkDep

router = APIRouter(prefix="/v1", tags=["benefits"])

ERRORS: ErrorTable = {
    InvalidRegion: invalid_field("region"),
    ParameterError: lambda exc: Problem(
        422,
        "invalid-parameter",
        str(exc),
        errors=[{"field": exc.key, "reason": exc.reason, "code": "invalid"}],
    ),
    service.UnknownParameter: lambda exc: Problem(404, "not-found", f"no parameter {exc}"),
    # Outside the caller's regions is not found, as if it did not exist: never a 403 that
    # would confirm it, nor the name of the region it is in.
    service.RegionNotAllowed: lambda exc: Problem(
        404, "not-found", "nothing found within the token's regions"
    ),
    service.HouseholdNotKnown: lambda exc: Problem(
        404, "not-found", f"no inputs held for household {exc}"
    ),
    service.DecisionNotFound: lambda exc: Problem(404, "not-found", f"decision {exc} not found"),
    # A scope refusal, the same as the token check's: it says nothing of any household.
    service.ScopeRequired: lambda exc: Problem(
        403, "forbidden", f"the token lacks the scope {exc.scope}", missing_scopes=[exc.scope]
    ),
    service.PurposeRequired: lambda exc: Problem(400, "purpose-required", str(exc)),
    RegistryUnavailable: lambda exc: Problem(
        503, "registry-unavailable", "the registry did not answer: try again later"
    ),
}


def context(*scopes: str) -> Callable[..., Awaitable[service.Context]]:
    async def dependency(
        request: Request, principal: Annotated[Principal, Depends(require(*scopes))]
    ) -> service.Context:
        return service.Context(
            principal=principal,
            engine=request.app.state.engine,
            today=date.today(),
            profile=request.app.state.settings.suite.crypto_profile,
        )

    return dependency


Reader = Annotated[service.Context, Depends(context("benefits:read"))]
HouseholdId = Annotated[str, Path(min_length=1, max_length=64, pattern=TEXT)]
DecisionId = Annotated[str, Path(min_length=1, max_length=36, pattern=TEXT)]
Admin = Annotated[service.Context, Depends(context("benefits:admin"))]


def _json(body: Any, status_code: int = 200) -> JSONResponse:
    return JSONResponse(jsonable_encoder(body), status_code=status_code)


Purpose = Annotated[
    str | None,
    purpose(
        "Why the caller reads a household's answer on a day other than today or the first of "
        "a month: required with pii:read for such a day, and recorded in the audit log"
    ),
]


IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", description="Retry safely: the same key replays the answer"),
]


async def _once(
    request: Request,
    uow: UnitOfWorkDep,
    ctx: service.Context,
    *,
    key: str | None,
    body: BaseModel,
    write: Callable[[], Awaitable[Any]],
) -> JSONResponse:
    """Run a write (answering 201) once per Idempotency-Key; a retry replays the answer."""
    digest = idempotency.request_hash(
        ctx.principal, "POST", request.url.path, body.model_dump(mode="json")
    )
    if key:
        stored = await idempotency.replay(uow.session, client_id=ctx.actor, key=key, digest=digest)
        if stored:
            return JSONResponse(stored.body, stored.status_code, headers=stored.headers)
    answer = jsonable_encoder(await write())
    if key:
        await idempotency.remember(
            uow.session,
            client_id=ctx.actor,
            key=key,
            digest=digest,
            response=idempotency.StoredResponse(201, answer, {}),
        )
    await uow.commit()
    return JSONResponse(answer, status_code=201)


@router.post("/cards", summary="帮扶措施明白卡 for inline inputs (stored as a receipt)")
async def compute_card(body: ComputeIn, uow: UnitOfWorkDep, ctx: Reader) -> JSONResponse:
    decision_id, card = await service.compute(uow, ctx, body.household, on=body.on)
    await uow.commit()
    return _json(service.card_body(card, decision_id))


@router.post("/eligibility", summary="Which categories apply to inline inputs, and why not")
async def compute_eligibility(body: ComputeIn, uow: UnitOfWorkDep, ctx: Reader) -> JSONResponse:
    decision_id, card = await service.compute(
        uow, ctx, body.household, on=body.on, kind="eligibility"
    )
    await uow.commit()
    return _json({"decision_id": decision_id, "eligibility": card.eligibility, "on": card.on})


@router.put("/households/{household_id}", summary="Hold a household's inputs (and decide)")
async def put_household(
    household_id: HouseholdId, body: HouseholdPut, uow: UnitOfWorkDep, ctx: Admin
) -> JSONResponse:
    household = body.household.model_copy(update={"household_id": household_id})
    await service.put_household(uow, ctx, household)
    decision_id, card, _ = await service.decide_household(uow, ctx, household_id)
    await uow.commit()
    return _json(service.card_body(card, decision_id))


@router.get("/households/{household_id}/card", summary="The household's card on a day")
async def household_card(
    household_id: HouseholdId,
    request: Request,
    uow: UnitOfWorkDep,
    ctx: Reader,
    on: date | None = None,
    purpose: Purpose = None,
) -> JSONResponse:
    await service.hold(uow, ctx, household_id, settings=request.app.state.settings)
    decision_id, card, _ = await service.decide_household(
        uow, ctx, household_id, on=on, purpose=purpose
    )
    await uow.commit()
    return _json(service.card_body(card, decision_id))


@router.get("/households/{household_id}/eligibility", summary="Categories on a day, and why not")
async def household_eligibility(
    household_id: HouseholdId,
    request: Request,
    uow: UnitOfWorkDep,
    ctx: Reader,
    on: date | None = None,
    purpose: Purpose = None,
) -> JSONResponse:
    await service.hold(uow, ctx, household_id, settings=request.app.state.settings)
    decision_id, card = await service.eligibility_of(uow, ctx, household_id, on=on, purpose=purpose)
    await uow.commit()
    return _json({"decision_id": decision_id, "eligibility": card.eligibility, "on": card.on})


@router.get("/households/{household_id}/exit", summary="脱困 by income: months above so far")
async def household_exit(
    household_id: HouseholdId, request: Request, uow: UnitOfWorkDep, ctx: Reader
) -> JSONResponse:
    await service.hold(uow, ctx, household_id, settings=request.app.state.settings)
    status = await service.exit_of(uow, ctx, household_id)
    await uow.commit()  # keeps a file fetched from the registry
    return _json(dataclasses.asdict(status))


@router.get("/decisions/{decision_id}", summary="A decision receipt")
async def get_decision(
    decision_id: DecisionId, uow: UnitOfWorkDep, ctx: Reader, purpose: Purpose = None
) -> JSONResponse:
    decision = await service.get_decision(uow, ctx, decision_id, purpose=purpose)
    await uow.commit()  # keeps the audit record of a read that needed pii:read
    return _json(decision)


@router.post(
    "/decisions/{decision_id}/rederive",
    summary="Re-derive a decision from its receipt and compare (异议, audit)",
)
async def rederive(
    decision_id: DecisionId, uow: UnitOfWorkDep, ctx: Reader, purpose: Purpose = None
) -> JSONResponse:
    compared = await service.rederive(uow, ctx, decision_id, purpose=purpose)
    await uow.commit()  # keeps the audit record of a read that needed pii:read
    return _json(compared)


@router.get("/parameters/{region}", summary="The parameters in force in a region on a day")
async def parameters(
    region: str, uow: UnitOfWorkDep, ctx: Reader, on: date | None = None
) -> JSONResponse:
    return _json(await service.resolved_parameters(uow, ctx, region, on=on))


@router.get("/parameters/{region}/{key}", summary="A parameter's dated values at one level")
async def parameter_history(region: str, key: str, uow: UnitOfWorkDep, ctx: Reader) -> JSONResponse:
    return _json(await service.parameter_history(uow, ctx, region, key))


@router.post(
    "/parameters/{region}/{key}",
    status_code=201,
    summary="Add a dated value; every household it reaches is recomputed",
)
async def add_parameter(
    region: str,
    key: str,
    body: ParameterIn,
    request: Request,
    uow: UnitOfWorkDep,
    ctx: Admin,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    return await _once(
        request,
        uow,
        ctx,
        key=idempotency_key,
        body=body,
        write=lambda: service.add_parameter(uow, ctx, region=region, key=key, body=body),
    )


@router.post("/ledger/payments", status_code=201, summary="Post a department's payment")
async def post_payment(
    body: PaymentIn,
    request: Request,
    uow: UnitOfWorkDep,
    ctx: Admin,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    return await _once(
        request,
        uow,
        ctx,
        key=idempotency_key,
        body=body,
        write=lambda: service.post_payment(uow, ctx, body),
    )


@router.get("/ledger/duplicates", summary="重复救助 found in a region")
async def duplicates(region: str, uow: UnitOfWorkDep, ctx: Reader) -> JSONResponse:
    return _json(await service.duplicates(uow, ctx, region=region))


@router.post("/what-if", summary="If a parameter became X from D: who moves, and the cost")
async def what_if(
    body: WhatIfIn, uow: UnitOfWorkDep, ctx: Reader, purpose: Purpose = None
) -> JSONResponse:
    priced = await service.what_if(uow, ctx, body, purpose=purpose)
    await uow.commit()  # keeps the audit record of a date that needed pii:read
    return _json(priced)


def _asyncapi() -> dict[str, Any]:
    """One AsyncAPI document for the events of all four aggregates."""
    aggregates = dict.fromkeys(cls.aggregate for cls in EVENT_TYPES)
    documents = [
        asyncapi_document("benefits", a, [c for c in EVENT_TYPES if c.aggregate == a])
        for a in aggregates
    ]
    merged = documents[0]
    for document in documents[1:]:
        merged["channels"].update(document["channels"])
        merged["operations"].update(document["operations"])
        for part in ("schemas", "messages"):
            merged["components"][part].update(document["components"][part])
    return merged


_ASYNCAPI = _asyncapi()
_SCHEMAS = {event_type("benefits", cls.aggregate, cls.name): cls for cls in EVENT_TYPES}


@router.get("/events/schemas", tags=["events"], summary="Every event type, with its schema")
async def event_schemas() -> dict[str, Any]:
    return {type_: data_schema(cls, type_=type_) for type_, cls in _SCHEMAS.items()}


@router.get("/events/asyncapi.json", tags=["events"], summary="AsyncAPI 3 of every event")
async def asyncapi_json() -> dict[str, Any]:
    return _ASYNCAPI


@router.get("/events/schemas/{type_}", tags=["events"], summary="One event type's data schema")
async def event_schema(type_: str) -> dict[str, Any]:
    cls = _SCHEMAS.get(type_.removesuffix(".json"))
    if cls is None:
        raise Problem(404, "not-found", f"no event type {type_}")
    return data_schema(cls, type_=type_.removesuffix(".json"))
