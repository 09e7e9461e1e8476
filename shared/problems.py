"""`application/problem+json` (RFC 9457) for every error a service returns."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger(__name__)

PROBLEM_BASE = "https://bangfu.org/problems/"
MEDIA_TYPE = "application/problem+json"


class Problem(Exception):
    """An error the API answers with a problem document; `type_` is a stable slug."""

    def __init__(
        self,
        status: int,
        type_: str,
        detail: str,
        *,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ):
        super().__init__(detail)
        self.status = status
        self.type_ = type_
        self.detail = detail
        self.title = title or HTTPStatus(status).phrase
        self.headers = headers
        self.extensions = extensions


def problem_response(
    status: int,
    type_: str,
    detail: str,
    *,
    title: str | None = None,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + type_,
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update(extensions)
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


# Stable type slugs for the statuses the framework itself raises.
_HTTP_TYPES = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    409: "conflict",
    412: "precondition-failed",
    413: "content-too-large",
    415: "unsupported-media-type",
    422: "invalid-input",
    428: "precondition-required",
    429: "too-many-requests",
}


def _field_path(location: tuple[Any, ...]) -> str:
    """`("body", "head", "identity_number")` -> `head.identity_number`."""
    parts = [str(p) for p in location if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or str(location[0] if location else "")


ErrorTable = Mapping[type[Exception], Callable[[Any], Problem]]


def invalid_field(
    field: str | None = None, type_: str = "invalid-input"
) -> Callable[[Exception], Problem]:
    """An error-table entry: a 422 naming the field (or the error's own `field`) and a `code`.

    `code` is the error's machine-readable `code` where it has one (an identity number's
    `checksum`, say), else `invalid`.
    """

    def to_problem(exc: Exception) -> Problem:
        error = {
            "field": field or getattr(exc, "field", ""),
            "reason": str(exc),
            "code": getattr(exc, "code", "invalid"),
        }
        return Problem(422, type_, str(exc), errors=[error])

    return to_problem


def _render(request: Request, problem: Problem) -> JSONResponse:
    return problem_response(
        problem.status,
        problem.type_,
        problem.detail,
        title=problem.title,
        instance=request.url.path,
        headers=problem.headers,
        **problem.extensions,
    )


def install_problem_handlers(app: FastAPI, errors: ErrorTable | None = None) -> None:
    """Route every error through problem+json; never leak a stack trace.

    `errors` is a service's table from its domain errors (which know nothing of HTTP) to
    problems: `{HouseholdNotFound: lambda e: Problem(404, "not-found", str(e))}`.
    """

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return _render(request, exc)

    for error_type, to_problem in (errors or {}).items():

        async def _mapped(
            request: Request, exc: Exception, to_problem: Any = to_problem
        ) -> JSONResponse:
            return _render(request, to_problem(exc))

        app.add_exception_handler(error_type, _mapped)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "field": _field_path(tuple(e.get("loc", ()))),
                "location": str(e["loc"][0]) if e.get("loc") else None,
                "reason": e.get("msg", "invalid"),
            }
            for e in exc.errors()
        ]
        malformed = any(e.get("type") == "json_invalid" for e in exc.errors())
        if malformed:
            return problem_response(
                400,
                "malformed-json",
                "the request body is not valid JSON",
                instance=request.url.path,
                errors=errors,
            )
        return problem_response(
            422,
            "invalid-input",
            "; ".join(f"{e['field']}: {e['reason']}" for e in errors),
            instance=request.url.path,
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        return problem_response(
            exc.status_code,
            _HTTP_TYPES.get(exc.status_code, "error"),
            detail,
            instance=request.url.path,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request.unhandled_error", path=request.url.path)
        return problem_response(
            500,
            "internal-error",
            "an internal error occurred; it has been logged",
            instance=request.url.path,
        )


_JSON_TYPES = ("application/json", "application/merge-patch+json")
_BODY_METHODS = {"POST", "PUT", "PATCH"}


class BodyGuardMiddleware:
    """413 for a body over the limit (declared or streamed), 415 for a body that is not JSON.

    A route that takes another media type (an Excel upload) lists it in `extra_media_types`;
    a path that takes larger bodies names its limit in `path_limits`.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        extra_media_types: tuple[str, ...] = (),
        path_limits: Mapping[str, int] | None = None,
    ):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.media_types = _JSON_TYPES + extra_media_types
        self.path_limits = dict(path_limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        limit = self.path_limits.get(scope["path"], self.max_body_bytes)
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._reject(scope, send, 413, self._too_large(limit))
            return
        media_type = headers.get("content-type", "").split(";")[0].strip().lower()
        has_body = declared not in (None, "0") or "transfer-encoding" in headers
        if has_body and media_type not in self.media_types:
            await self._reject(
                scope,
                send,
                415,
                (
                    f"content type {media_type or '(none)'!r} is not accepted; "
                    f"send one of {', '.join(self.media_types)}"
                ),
            )
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # FastAPI lets an HTTPException from the body read reach the handlers.
                    raise StarletteHTTPException(413, detail=self._too_large(limit))
            return message

        await self.app(scope, limited_receive, send)

    def _too_large(self, limit: int) -> str:
        return f"the request body is larger than {limit} bytes"

    async def _reject(self, scope: Scope, send: Send, status: int, detail: str) -> None:
        response = problem_response(status, _HTTP_TYPES[status], detail, instance=scope["path"])
        await response(scope, _empty_receive, send)


async def _empty_receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}
