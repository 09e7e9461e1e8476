"""The console's app factory: `uvicorn services.console.app:create_app --factory`.

Server-rendered pages (Jinja2), no script at all: the Content-Security-Policy allows none.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import structlog
from fastapi import FastAPI, Request, Response
from fastapi.responses import PlainTextResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.exc import DBAPIError

from services.console import (
    auth,
    checks,
    clear,
    dashboard,
    imports,
    labels,
    pages,
    prints,
    results,
)
from services.console.benefits import Benefits
from services.console.oidc import OidcClient
from services.console.registry import Registry
from services.console.sessions import SessionMiddleware, SessionStore
from services.console.settings import ConsoleSettings
from services.console.verification import Verification
from services.console.web import Console, cookie_name, origin
from shared.db import Database
from shared.migrations import schema_at_head

HERE = Path(__file__).resolve().parent
log = structlog.get_logger(__name__)


def content_security_policy(settings: ConsoleSettings, *, framed: bool = False) -> str:
    """No script, no inline style; forms go to the console, and sign-out's redirect to the
    provider (browsers check a form's redirects against form-action too). Pages may frame the
    console's own pages (the file's status frame); only a page that says so may be framed, and
    by the console alone."""
    return "; ".join(
        (
            "default-src 'none'",
            "style-src 'self'",
            "img-src 'self'",
            "frame-src 'self'",
            f"form-action 'self' {origin(settings.issuer)}",
            "frame-ancestors 'self'" if framed else "frame-ancestors 'none'",
            "base-uri 'none'",
        )
    )


def templates() -> Jinja2Templates:
    environment = Jinja2Templates(directory=str(HERE / "templates"))
    environment.env.globals.update(
        STATUS=labels.STATUS,
        STEP=labels.STEP,
        ACTION=labels.ACTION,
        CATEGORY=labels.CATEGORY,
        CAUSE=labels.CAUSE,
        RELATION=labels.RELATION,
        HUKOU=labels.HUKOU,
        EXIT_KIND=labels.EXIT_KIND,
        LABOUR=labels.LABOUR,
        EMPLOYMENT=labels.EMPLOYMENT,
        EDUCATION=labels.EDUCATION,
        DECLARED_ITEM=labels.DECLARED_ITEM,
        CONSENT_STATE=labels.CONSENT_STATE,
        PLAN_GROUP=labels.PLAN_GROUP,
        PLAN_STATUS=labels.PLAN_STATUS,
        SEX=labels.SEX,
        VERIFICATION=labels.VERIFICATION,
        ASSET=labels.ASSET,
        PERIOD=labels.PERIOD,
        VERDICT=labels.VERDICT,
        DEPARTMENT=labels.DEPARTMENT,
        ITEM_STATUS=labels.ITEM_STATUS,
        CIRCUIT=labels.CIRCUIT,
        NEEDS_REASON=labels.STEPS_NEEDING_A_REASON,
        CLEAR_PURPOSES=clear.PURPOSES,
        word=labels.word,
    )
    environment.env.filters["when"] = when
    environment.env.filters["yuan"] = yuan
    return environment


def when(value: object) -> str:
    """An ISO timestamp as a person reads it: `2026-11-30 00:27:02` (UTC, as stored)."""
    return str(value or "")[:19].replace("T", " ")


def yuan(fen: object) -> str:
    """Integer fen as yuan with two decimals (display only: money stays in fen elsewhere)."""
    return f"{int(str(fen)) / 100:.2f}" if fen is not None else ""


def create_app(settings: ConsoleSettings | None = None) -> FastAPI:
    settings = settings or ConsoleSettings()
    policy = content_security_policy(settings)
    framed_policy = content_security_policy(settings, framed=True)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url, schema = settings.database
        database = Database(url, schema=schema)
        app.state.database = database
        async with httpx.AsyncClient(timeout=settings.request_timeout_seconds) as http:
            app.state.console = Console(
                settings=settings,
                sessions=SessionStore(
                    database,
                    settings.keyring(),
                    lifetime_seconds=settings.session_hours * 3600,
                ),
                oidc=OidcClient(
                    http=http,
                    issuer=settings.issuer,
                    audience=settings.suite.auth_audience,
                    client_id=settings.client_id,
                    redirect_uri=settings.redirect_uri,
                    scopes=settings.scopes,
                    leeway_seconds=settings.suite.auth_leeway_seconds,
                ),
                registry=Registry(http, settings.registry_url),
                verification=Verification(http, settings.verification_url),
                benefits=Benefits(http, settings.benefits_url),
                templates=templates(),
            )
            try:
                yield
            finally:
                await database.dispose()

    app = FastAPI(
        title="Bangfu console", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        framed = getattr(request.state, "framed", False)
        response.headers["Content-Security-Policy"] = framed_policy if framed else policy
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "SAMEORIGIN" if framed else "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        if not request.url.path.startswith("/static/"):
            # Pages show people's files: no copy kept by the browser or a proxy.
            response.headers["Cache-Control"] = "no-store"
        if settings.secure_cookies:
            response.headers["Strict-Transport-Security"] = "max-age=31536000"
        return response

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok")

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> PlainTextResponse:
        """Ready once the sessions table is at the newest migration (`bangfu migrate`)."""
        try:
            ready = await schema_at_head(request.app.state.database, "console")
        except (OSError, DBAPIError) as exc:  # the database is away
            log.warning("console.database_unreachable", error=repr(exc))
            ready = False
        if not ready:
            return PlainTextResponse("the console's sessions table is not migrated", 503)
        return PlainTextResponse("ok")

    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(auth.router)
    app.include_router(pages.router)
    app.include_router(checks.router)
    app.include_router(prints.router)
    app.include_router(results.router)
    app.include_router(clear.router)
    app.include_router(imports.router)
    app.include_router(dashboard.router)
    pages.install_error_pages(app)
    app.add_middleware(SessionMiddleware, cookie=cookie_name(settings))
    return app
