"""What the console's routes share: the session of a request, forms checked for CSRF, pages."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData

from services.console.benefits import Benefits
from services.console.oidc import OidcClient, SignInFailed, everyday_scopes
from services.console.registry import Registry
from services.console.sessions import Session, SessionStore
from services.console.settings import ConsoleSettings
from services.console.verification import Verification

# The access token is renewed this long before it expires, so that no call carries one that
# expires on the way.
RENEW_BEFORE_SECONDS = 60


@dataclass
class Console:
    """What every request needs; built in the lifespan, closed after it."""

    settings: ConsoleSettings
    sessions: SessionStore
    oidc: OidcClient
    registry: Registry
    verification: Verification
    benefits: Benefits
    templates: Jinja2Templates


class NotSignedIn(Exception):
    """The page needs a signed-in person: the browser is sent to sign in."""


class FormRejected(Exception):
    """A form without the session's CSRF token, or from another origin."""


def console(request: Request) -> Console:
    found: Console = request.app.state.console
    return found


def cookie_name(settings: ConsoleSettings) -> str:
    # __Host-: only over https, for this host only, path / (RFC 6265bis §4.1.3.2).
    return "__Host-bangfu-console" if settings.secure_cookies else "bangfu-console"


def session_of(request: Request) -> Session | None:
    app = console(request)
    return app.sessions.get(request.cookies.get(cookie_name(app.settings)))


def signed_in(request: Request) -> Session:
    session = session_of(request)
    if session is None or session.person is None or session.tokens is None:
        raise NotSignedIn()
    return session


def set_session_cookie(response: Response, settings: ConsoleSettings, session: Session) -> None:
    response.set_cookie(
        cookie_name(settings),
        session.id,
        max_age=int(max(0, session.expires_at - time.time())),
        path="/",
        httponly=True,
        samesite="lax",
        secure=settings.secure_cookies,
    )


def clear_session_cookie(response: Response, settings: ConsoleSettings) -> None:
    response.delete_cookie(
        cookie_name(settings),
        path="/",
        httponly=True,
        samesite="lax",
        secure=settings.secure_cookies,
    )


async def checked_form(request: Request, session: Session) -> FormData:
    """The form, once its CSRF token is the session's and it came from the console's own
    pages (Origin, when the browser sends it): otherwise FormRejected."""
    settings = console(request).settings
    sent_from = request.headers.get("origin")
    if sent_from is not None and sent_from != origin(settings.public_url):
        raise FormRejected(f"a form from {sent_from!r}")
    form = await request.form()
    token = form.get("csrf")
    if not session.csrf_matches(token if isinstance(token, str) else None):
        raise FormRejected("the form's CSRF token is not the session's")
    return form


async def access_token(request: Request, session: Session) -> str:
    """The person's access token, renewed with the refresh token when it is about to expire."""
    tokens = session.tokens
    assert tokens is not None
    if tokens.access_expires_at - RENEW_BEFORE_SECONDS > time.time():
        return tokens.access_token
    app = console(request)
    assert session.person is not None
    try:
        async with app.sessions.renewing(session) as newest:
            if newest.access_expires_at - RENEW_BEFORE_SECONDS > time.time():
                return newest.access_token  # renewed by another request while this one waited
            session.tokens = await app.oidc.refresh(
                newest, scopes=everyday_scopes(session.person.scopes)
            )
    except SignInFailed as exc:
        app.sessions.drop(session.id)
        raise NotSignedIn() from exc
    return session.tokens.access_token


def render(
    request: Request,
    template: str,
    session: Session | None,
    *,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    flash = list(session.flash) if session else []
    if session:
        session.flash.clear()
    return console(request).templates.TemplateResponse(
        request,
        template,
        {
            "person": session.person if session else None,
            "csrf": session.csrf if session else "",
            "flash": flash,
            **context,
        },
        status_code=status_code,
    )


def redirect(location: str) -> RedirectResponse:
    return RedirectResponse(location, status_code=303)


def local_path(target: str | None) -> str:
    """`target` if it is a path of the console, else `/` (never an open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or "\\" in target:
        return "/"
    return target


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
