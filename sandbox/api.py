"""The sandbox's HTTP routes: department queries, the admin endpoints, the change feed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.requests import ClientDisconnect
from starlette.routing import Route

from sandbox.behaviour import Behaviour
from sandbox.changes import ChangeRequest
from sandbox.departments import DEPARTMENTS
from sandbox.protocol import (
    CONSENT_HEADER,
    MAX_PEOPLE,
    PURPOSE_HEADER,
    PersonQuery,
    QueryBody,
    Rejected,
    Reply,
)
from sandbox.service import Sandbox
from shared.events.streams import BackgroundConnection
from shared.problems import ErrorTable, Problem, problem_response

DRIP_CHUNK_BYTES = 16


def _rejected(exc: Rejected) -> Problem:
    return Problem(exc.status, exc.type_, exc.detail)


ERRORS: ErrorTable = {Rejected: _rejected}


async def get_sandbox(request: Request) -> Sandbox:
    # async: a plain function dependency would run in the thread pool, a thread hop per query.
    sandbox: Sandbox = request.app.state.sandbox
    return sandbox


SandboxDep = Annotated[Sandbox, Depends(get_sandbox)]

router = APIRouter()

# `query` and `queries` are plain Starlette routes, outside FastAPI's request handling, which
# was half of the sandbox's CPU per query (it answers every department of the suite: 11
# queries per person checked). FastAPI does not document such a route; these are their
# entries in /openapi.json.
QUERY_PATH = "/departments/{code}/query"
QUERY_OPENAPI: dict[str, Any] = {
    "post": {
        "tags": ["departments"],
        "summary": "Ask a department about one person",
        "description": "The department's answer, with `Bangfu-Request-Hash` and the consent id "
        "echoed. Errors are problem+json (400, 404 unknown department, 422, 500).",
        "operationId": "query_departments__code__query_post",
        "parameters": [
            {"name": "code", "in": "path", "required": True, "schema": {"type": "string"}},
            {
                "name": CONSENT_HEADER,
                "in": "header",
                "required": True,
                "schema": {"type": "string"},
            },
            {
                "name": PURPOSE_HEADER,
                "in": "header",
                "required": True,
                "description": "Percent-encoded UTF-8.",
                "schema": {"type": "string"},
            },
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": QueryBody.model_json_schema()}},
        },
        "responses": {
            "200": {
                "description": "The department's answer",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
    }
}


QUERIES_PATH = "/departments/{code}/queries"
QUERIES_OPENAPI: dict[str, Any] = {
    "post": {
        "tags": ["departments"],
        "summary": "Ask a department about several people (a household's members) at once",
        "description": 'One answer per person, in the order asked: `{"answers": [{"status": '
        '200, "request_hash": …, "answer": {…}} or {"status": 422, "error": {…}}]}`. '
        "Each request hash is the one that person's query alone would have. Errors of the "
        "whole request are problem+json (400, 404 unknown department, 422, 500).",
        "operationId": "query_many_departments__code__queries_post",
        "parameters": [
            QUERY_OPENAPI["post"]["parameters"][0],
            QUERY_OPENAPI["post"]["parameters"][2],
        ],
        "requestBody": {
            "required": True,
            # Written out: pydantic's schema of the list refers to a `$defs` outside OpenAPI.
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["people"],
                        "properties": {
                            "people": {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": MAX_PEOPLE,
                                "items": PersonQuery.model_json_schema(),
                            }
                        },
                    }
                }
            },
        },
        "responses": {
            "200": {
                "description": "An answer or an error per person",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
    }
}

Answering = Callable[..., Awaitable[Reply]]


async def query(request: Request) -> Response:
    """The department's answer, with `Bangfu-Request-Hash` and the consent id echoed."""
    sandbox: Sandbox = request.app.state.sandbox
    return await _answer(request, sandbox.query)


async def queries(request: Request) -> Response:
    """The department's answers about several people."""
    sandbox: Sandbox = request.app.state.sandbox
    return await _answer(request, sandbox.query_many)


async def _answer(request: Request, answering: Answering) -> Response:
    sandbox: Sandbox = request.app.state.sandbox
    code: str = request.path_params["code"]
    try:
        raw = await request.body()
    except ClientDisconnect:
        # The caller gave up before its query was read (its timeout under load): nobody is
        # there to answer, and a traceback per such request only slowed the sandbox further.
        return Response(status_code=499)
    headers: Mapping[str, str] = request.headers
    # Read off the connection before the app's turn came (`ArrivalStampingProtocol`).
    arrived: float | None = getattr(request.state, "arrived", None)
    reply = await answering(code, raw=raw, headers=headers, arrived=arrived)
    if request.client:
        sandbox.connected(code, f"{request.client.host}:{request.client.port}")
    if reply.fault == "http_500":
        return problem_response(
            500, "department-error", "the department's system failed", instance=request.url.path
        )
    if reply.fault == "timeout":
        await _hold(request, seconds=request.app.state.settings.timeout_seconds)
    if reply.fault == "slow_drip":
        return StreamingResponse(
            _drip(reply.body, seconds=reply.drip_seconds),
            media_type="application/json",
            headers=reply.headers,
        )
    return Response(reply.body, media_type="application/json", headers=reply.headers)


QUERY_ROUTE = Route(QUERY_PATH, query, methods=["POST"])
QUERIES_ROUTE = Route(QUERIES_PATH, queries, methods=["POST"])


async def _hold(request: Request, *, seconds: float) -> None:
    """Keep the caller waiting, but stop as soon as it hangs up."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline and not await request.is_disconnected():
        await asyncio.sleep(min(0.25, max(0.0, deadline - loop.time())))


async def _drip(body: bytes, *, seconds: float) -> AsyncIterator[bytes]:
    chunks = [body[i : i + DRIP_CHUNK_BYTES] for i in range(0, len(body), DRIP_CHUNK_BYTES)]
    pause = seconds / len(chunks)
    for chunk in chunks:
        await asyncio.sleep(pause)
        yield chunk


@router.get("/admin/departments", tags=["admin"], summary="Every department's behaviour")
async def list_departments(sandbox: SandboxDep) -> dict[str, dict[str, Any]]:
    return {code: sandbox.view(code) for code in DEPARTMENTS}


@router.get("/admin/departments/{code}", tags=["admin"], summary="One department's behaviour")
async def get_department(code: str, sandbox: SandboxDep) -> dict[str, Any]:
    return sandbox.view(code)


@router.put("/admin/departments/{code}", tags=["admin"], summary="Set latency and faults")
async def put_department(code: str, behaviour: Behaviour, sandbox: SandboxDep) -> dict[str, Any]:
    sandbox.set_behaviour(code, behaviour)
    return sandbox.view(code)


@router.delete("/admin/departments/{code}", tags=["admin"], summary="Reset to no latency, no fault")
async def reset_department(code: str, sandbox: SandboxDep) -> Response:
    sandbox.set_behaviour(code, None)
    return Response(status_code=204)


@router.post("/admin/changes", tags=["admin"], status_code=202, summary="Publish a change")
async def publish_change(change: ChangeRequest, sandbox: SandboxDep) -> dict[str, Any]:
    """Publish on `bangfu.dept.<code>.changed.<pp>.<cc>.<dd>`; later answers reflect it."""
    event = await sandbox.publish_change(change)
    return {"subject": event.nats_subject, "event": event.model_dump(mode="json")}


def _nats_check(request: Request) -> str:
    connection: BackgroundConnection | None = request.app.state.nats
    return connection.check() if connection else "off"


@router.get("/healthz", tags=["operations"], summary="Alive")
async def healthz(request: Request) -> dict[str, str]:
    return {"status": "ok", "nats": _nats_check(request)}


@router.get("/readyz", tags=["operations"], summary="Ready: answering on NATS (unless it is off)")
async def readyz(request: Request) -> Response:
    checks = {"nats": _nats_check(request)}
    if checks["nats"] in ("ok", "off"):
        return JSONResponse({"status": "ready", "checks": checks})
    return problem_response(503, "not-ready", "a dependency is not ready", checks=checks)
