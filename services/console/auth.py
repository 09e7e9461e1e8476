"""Sign-in (authorization code + PKCE) and sign-out (this session, then the provider's)."""

from __future__ import annotations

import httpx
import jwt
import structlog
from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.console.oidc import SignInFailed
from services.console.web import (
    checked_form,
    clear_session_cookie,
    console,
    local_path,
    redirect,
    render,
    session_of,
    set_session_cookie,
)
from shared.auth import KeysUnavailable

router = APIRouter(prefix="/auth")
log = structlog.get_logger(__name__)


@router.get("/login")
async def login(request: Request, next: str | None = None) -> Response:
    """Start a sign-in: remember state, nonce and verifier in a session, go to the provider."""
    app = console(request)
    try:
        sign_in, url = await app.oidc.start(local_path(next))
    except (httpx.HTTPError, ValueError, SignInFailed) as exc:
        log.warning("console.provider_unreachable", error=repr(exc))
        message = "统一身份认证服务暂时无法访问，请稍后再试。"
        return render(request, "error.html", None, status_code=503, message=message)
    session = session_of(request) or app.sessions.new()
    session.sign_in = sign_in
    response = redirect(url)
    set_session_cookie(response, app.settings, session)
    return response


@router.get("/callback")
async def callback(
    request: Request,
    code: str | None = None,
    state: str | None = None,
    iss: str | None = None,
    error: str | None = None,
) -> Response:
    """The provider's answer: the code is redeemed only for the sign-in this browser started."""
    app = console(request)
    session = session_of(request)
    sign_in = session.sign_in if session else None
    if session is None or sign_in is None or not code or not state or error:
        log.info("console.sign_in_refused", reason=error or "no sign-in in progress")
        return render(
            request,
            "error.html",
            None,
            status_code=400,
            message="登录没有完成（可能已过期或在另一个窗口中进行）。请重新登录。",
        )
    session.sign_in = None  # one use: a replayed callback finds nothing
    try:
        person, tokens = await app.oidc.finish(sign_in, code=code, state=state, iss=iss)
    except (SignInFailed, KeysUnavailable, jwt.PyJWTError, httpx.HTTPError) as exc:
        log.warning("console.sign_in_failed", error=str(exc))
        return render(
            request, "error.html", None, status_code=400, message="登录验证未通过，请重新登录。"
        )
    signed = app.sessions.signed_in(session, person, tokens)
    log.info("console.signed_in", sub=person.sub, role=person.role)
    response = redirect(sign_in.return_to)
    set_session_cookie(response, app.settings, signed)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """End this session, then the provider's (its end_session asks the person to confirm)."""
    app = console(request)
    session = session_of(request)
    if session is None:
        response = redirect("/")
        clear_session_cookie(response, app.settings)
        return response
    await checked_form(request, session)
    app.sessions.drop(session.id)
    try:
        target = await app.oidc.end_session_url(session.tokens, after=f"{app.settings.public_url}/")
    except (httpx.HTTPError, ValueError, SignInFailed):
        target = None
    response = redirect(target or "/")
    clear_session_cookie(response, app.settings)
    return response
