"""Pages made to be printed on A4 (and read on a phone): the region's 公示 and the 明白卡.

No script: the person prints with the browser (Ctrl+P); the stylesheet's `@media print`
drops the header and the forms and keeps each row whole.
"""

from __future__ import annotations

import re
from datetime import date

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.console.pages import _checked_id, region_choices
from services.console.web import access_token, console, redirect, render, signed_in

router = APIRouter()

_REGION = re.compile(r"^\d{2}(\d{2}){0,2}(\d{3}){0,2}$")


@router.get("/notices")
async def notices(request: Request, region: str | None = None) -> Response:
    """The notice of the region asked for, else of the person's first county."""
    session = signed_in(request)
    assert session.person is not None
    wanted = (region or "").strip() or next(iter(session.person.regions), "")
    if not _REGION.match(wanted):
        raise StarletteHTTPException(404)
    return redirect(f"/notices/{wanted}")


@router.get("/notices/{region}")
async def notice(request: Request, region: str) -> Response:
    """公示: the households of the region in their notice period, masked, printable."""
    session = signed_in(request)
    assert session.person is not None
    if not _REGION.match(region):
        raise StarletteHTTPException(404)
    token = await access_token(request, session)
    registry = console(request).registry
    found = await registry.notice(token, region)
    # The picker offers the person's regions and those under them that hold households; a
    # region asked for by its URL is kept in it.
    regions = sorted(set(await region_choices(registry, token, session.person)) | {region})
    return render(
        request,
        "notice.html",
        session,
        notice=found,
        regions=regions,
        today=date.today().isoformat(),
    )


@router.get("/households/{household_id}/card")
async def card(request: Request, household_id: str) -> Response:
    """帮扶措施明白卡: each measure's amount and its explanation citing the clause."""
    session = signed_in(request)
    household_id = _checked_id(household_id)
    token = await access_token(request, session)
    app = console(request)
    file = await app.registry.household(token, household_id)
    found = await app.benefits.card(token, household_id)
    return render(request, "card.html", session, h=file.body, card=found)
