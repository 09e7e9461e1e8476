"""Verifications (核对), their reports, batches (批量核对), who looked, department health."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from services.verification import render, service, store
from services.verification.api.caller import (
    Caller,
    VerifierDep,
    household_in,
    json_response,
)
from services.verification.domain.report import Declared
from services.verification.schemas import (
    ID_PATTERN,
    BatchIn,
    PersonQueriesIn,
    VerificationIn,
)
from services.verification.worker import NotFiled, Verifier
from shared.auth import Principal, require
from shared.registry_client import HouseholdNotFound
from shared.service import FastJSONResponse, UnitOfWorkDep, get_runtime

router = APIRouter(prefix="/v1")


IdPath = Annotated[str, Path(pattern=ID_PATTERN)]


async def _subject(body: VerificationIn, ctx: service.Context, worker: Verifier) -> service.Subject:
    if body.members is not None:
        assert body.region is not None  # the schema requires it with inline members
        return service.Subject(
            household_id=None,
            region=body.region,
            members=tuple(
                (m.member_id, service.normalized_number(m.identity_number, today=ctx.today))
                for m in body.members
            ),
            declared=tuple(
                Declared(d.member_id, d.kind, d.item, d.amount_fen) for d in body.declared
            ),
        )
    assert body.household_id is not None
    # Where it is filed first, masked: the numbers are read (and audited) only inside.
    await household_in(worker, body.household_id, region=None, ctx=ctx)
    try:
        household = await worker.registry.household(
            body.household_id, pii=True, purpose=service.registry_purpose(body.purpose)
        )
        declarations = await worker.registry.declarations(body.household_id)
    except HouseholdNotFound:
        raise service.HouseholdUnknown(body.household_id) from None
    subject = service.subject_from_registry(household, declarations)
    if not ctx.principal.covers(subject.region):  # moved away between the two reads
        raise service.HouseholdUnknown(body.household_id)
    return subject


@router.post(
    "/verifications",
    status_code=202,
    tags=["verifications"],
    summary="Ask the departments about a household (202: the report follows)",
    responses={403: {"description": "no valid consent covers anything asked"}},
)
async def request_verification(
    body: VerificationIn, uow: UnitOfWorkDep, ctx: Caller, worker: VerifierDep
) -> JSONResponse:
    subject = await _subject(body, ctx, worker)
    # Run it here, if a slot is free, rather than through the queue: its claim and its
    # consents' second read cost a caller 11 ms of waiting (bench/verification.py).
    lease = worker.promise_run()
    try:
        requested = await service.check_request(
            uow,
            ctx,
            subject=subject,
            purpose=body.purpose,
            departments=body.departments,
            lease_seconds=lease,
        )
    except BaseException:
        if lease is not None:
            worker.withdraw_promise()
        raise
    filed: asyncio.Future[dict[str, Any]] | None = None
    if lease is not None:
        filed = asyncio.get_running_loop().create_future()
        worker.hand_over(requested.row, subject, requested.people, filed)
    try:
        if filed is not None:
            # The run's questions go first, the row's writing after: the departments take
            # 50 ms to answer, and the writing delays nobody meanwhile. Four turns of the
            # loop: the run's, its departments', their requests', and aiohttp's writer of
            # their bodies (a task of its own before Python 3.12). Written first, the row put
            # the questions on the wire 0.5-1.1 ms later (bench/verification.py, stop 54).
            for _ in range(4):
                await asyncio.sleep(0)
        # The row as inserted (RETURNING): a read after the commit cost a caller 1.8 ms.
        row = await service.file(uow, requested.row, requested.event)
        assert row is not None  # no cause, so never a duplicate
        await uow.commit()
    except BaseException as exc:
        if filed is not None:
            filed.set_exception(NotFiled(f"{type(exc).__name__}: {exc}"))
        raise
    if filed is not None:
        filed.set_result(row)
    location = f"/v1/verifications/{row['id']}"
    return FastJSONResponse(
        {**service.verification_view(row), "members": requested.overview},
        status_code=202,
        headers={"Location": location},
    )


@router.get(
    "/verifications",
    tags=["verifications"],
    summary="Verifications, newest first, filtered (in the caller's regions)",
)
async def list_verifications(
    uow: UnitOfWorkDep,
    ctx: Caller,
    household_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    batch_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    status: Literal["queued", "running", "completed", "failed", "cancelled"] | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JSONResponse:
    rows = await store.list_verifications(
        uow.session,
        regions=ctx.principal.regions,
        household_id=household_id,
        batch_id=batch_id,
        status=status,
        limit=limit,
    )
    return json_response([service.verification_view(r) for r in rows])


@router.get(
    "/verifications/{verification_id}", tags=["verifications"], summary="Status of a verification"
)
async def get_verification(
    verification_id: IdPath, uow: UnitOfWorkDep, ctx: Caller
) -> JSONResponse:
    row = await service.get_verification(uow, ctx, verification_id)
    return json_response(service.verification_view(row))


@router.get(
    "/verifications/{verification_id}/report",
    tags=["verifications"],
    summary="The report (核对报告), as JSON or as a page to print (Accept: text/html)",
    response_model=None,
    responses={200: {"content": {"text/html": {}}}, 404: {"description": "no report yet"}},
)
async def get_report(
    request: Request,
    verification_id: IdPath,
    uow: UnitOfWorkDep,
    ctx: Caller,
    version: Annotated[int | None, Query(ge=1, description="default: the latest")] = None,
    format: Annotated[Literal["json", "html"] | None, Query()] = None,
) -> Response:
    await service.get_verification(uow, ctx, verification_id)
    row = await store.get_report(uow.session, verification_id, version)
    if row is None:
        raise service.VerificationNotFound(f"{verification_id} (no report yet)")
    wants_html = format == "html" or (
        format is None and "text/html" in request.headers.get("accept", "")
    )
    if wants_html:
        return HTMLResponse(render.report_html(row["body"]))
    return json_response(row["body"])


@router.get(
    "/verifications/{verification_id}/reports",
    tags=["verifications"],
    summary="Every version of the report, with its content hash",
)
async def report_versions(verification_id: IdPath, uow: UnitOfWorkDep, ctx: Caller) -> JSONResponse:
    await service.get_verification(uow, ctx, verification_id)
    return json_response(await store.report_versions(uow.session, verification_id))


@router.post(
    "/batches",
    status_code=202,
    tags=["batches"],
    summary="批量核对: verify a list of households, or every household of a region",
)
async def create_batch(
    body: BatchIn, uow: UnitOfWorkDep, ctx: Caller, worker: VerifierDep
) -> JSONResponse:
    if not ctx.principal.covers(body.region):
        raise service.RegionNotAllowed(body.region)
    # The region's households, read masked a page at a time: one named but filed elsewhere
    # is never read in clear, never verified.
    status = body.status if body.household_ids is None else None
    filed = await worker.registry.household_ids(region=body.region, status=status)
    batch = await service.create_batch(
        uow,
        ctx,
        household_ids=filed if body.household_ids is None else body.household_ids,
        filed=set(filed),
        region=body.region,
        purpose=body.purpose,
        departments=body.departments,
    )
    await uow.commit()
    if batch["status"] == "running":
        await store.sample_verifications(uow.session)
        await uow.commit()
    return JSONResponse(
        jsonable_encoder(service.batch_view(batch, now=datetime.now(UTC))),
        status_code=202,
        headers={"Location": f"/v1/batches/{batch['id']}"},
    )


@router.get(
    "/batches/{batch_id}",
    tags=["batches"],
    summary="Progress: done / total / failed, rate and ETA",
)
async def get_batch(batch_id: IdPath, uow: UnitOfWorkDep, ctx: Caller) -> JSONResponse:
    row = await service.get_batch(uow, ctx, batch_id)
    return json_response(service.batch_view(row, now=datetime.now(UTC)))


@router.post("/batches/{batch_id}/cancel", tags=["batches"], summary="Stop a batch")
async def cancel_batch(batch_id: IdPath, uow: UnitOfWorkDep, ctx: Caller) -> JSONResponse:
    row = await service.cancel_batch(uow, ctx, batch_id)
    await uow.commit()
    return json_response(service.batch_view(row, now=datetime.now(UTC)))


@router.get(
    "/batches/{batch_id}/results",
    tags=["batches"],
    summary="Results as they finish (NDJSON); `follow` keeps the stream open to the end",
    responses={200: {"content": {"application/x-ndjson": {}}}},
)
async def batch_results(
    request: Request, batch_id: IdPath, ctx: Caller, follow: bool = False
) -> StreamingResponse:
    # No request-long unit of work: the stream may outlive it, and SQLite has one connection.
    db = get_runtime(request).db
    async with db.unit_of_work() as uow:
        await service.get_batch(uow, ctx, batch_id)

    async def lines() -> AsyncIterator[bytes]:
        position: tuple[datetime, str] | None = None
        while True:
            async with db.unit_of_work() as reader:
                rows = await store.batch_results(
                    reader.session, batch_id, after=position, limit=500
                )
                batch = await store.get_batch(reader.session, batch_id)
            for row in rows:
                position = (row["finished_at"], row["id"])
                yield json.dumps(jsonable_encoder(row), ensure_ascii=False).encode() + b"\n"
            if rows:
                continue
            if not follow or batch is None or batch["status"] != "running":
                return
            await asyncio.sleep(0.5)

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.post(
    "/persons/queries",
    tags=["persons"],
    summary="Who looked at my data: every department query about one person",
)
async def person_queries(body: PersonQueriesIn, uow: UnitOfWorkDep, ctx: Caller) -> JSONResponse:
    return json_response(
        await service.queries_about(uow, ctx, identity_number=body.identity_number)
    )


@router.get(
    "/departments",
    tags=["departments"],
    summary="Each department's transport and live health (circuit, failures)",
)
async def departments(
    worker: VerifierDep,
    _: Annotated[Principal, Depends(require())],
) -> list[dict[str, Any]]:
    return worker.departments.health()
