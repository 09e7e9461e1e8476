"""A member's identity number in clear, for a purpose chosen from a list, recorded by the registry.

Only for a person granted `pii:read`: the console asks the provider for a token with it for this
one read (the pages are read with one without), sends the purpose as `Bangfu-Purpose`, shows
the one number on a page no one keeps (`Cache-Control: no-store`, as every page) and keeps
neither the number nor the token.
"""

from __future__ import annotations

from dataclasses import replace

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.console.oidc import PII_READ, SignInFailed
from services.console.pages import _checked_id, _file_page
from services.console.web import NotSignedIn, checked_form, console, render, signed_in

router = APIRouter()

# Why a county worker may need a number in clear: each is what the registry's audit log says.
PURPOSES = (
    "核对身份：与户口簿、身份证原件比对",
    "办理救助金发放：向银行核对账户户名与证件号",
    "处理信访、异议：核实当事人身份",
    "向部门转办：按部门要求提供完整证件号",
)


@router.post("/households/{household_id}/members/{member_id}/clear")
async def clear_number(request: Request, household_id: str, member_id: str) -> Response:
    session = signed_in(request)
    assert session.person is not None and session.tokens is not None
    if PII_READ not in session.person.scopes:
        raise StarletteHTTPException(403)
    household_id, member_id = _checked_id(household_id), _checked_id(member_id)
    form = await checked_form(request, session)
    purpose = str(form.get("purpose") or "")
    if purpose not in PURPOSES:
        return await _file_page(
            request, session, household_id, status_code=422, error="请选择查看完整身份证号的用途。"
        )
    app = console(request)
    try:
        async with app.sessions.renewing(session) as newest:
            clear = await app.oidc.clear_view_token(newest)
            # The provider may have rotated the refresh token: the session keeps the new one.
            session.tokens = replace(newest, refresh_token=clear.refresh_token)
    except SignInFailed as exc:
        app.sessions.drop(session.id)
        raise NotSignedIn() from exc
    file = await app.registry.household_in_clear(clear.access_token, household_id, purpose=purpose)
    member = next((m for m in file.body["members"] if m["id"] == member_id), None)
    if member is None:
        raise StarletteHTTPException(404)
    return render(request, "clear.html", session, h=file.body, member=member, purpose=purpose)
