"""The file's status frame: the latest 核对 and the card total, in an <iframe> of the file.

The pages run no script, so a result that lands while someone types in the file's forms is
shown by this frame alone: while a 核对 is queued or running, or a card is still to follow a
verification that landed a moment ago, it reloads itself (`<meta http-equiv="refresh">`) and
the file around it, with whatever was typed, stays as it is.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.console.pages import _checked_id
from services.console.verification import latest_report
from services.console.web import access_token, console, render, signed_in

router = APIRouter()

REFRESH_SECONDS = 5
# How long after a verification landed the frame waits for the card that follows it: the
# benefits service decides on the registry's event, and one that never comes must not keep a
# page reloading for ever.
CARD_PATIENCE = timedelta(minutes=10)


def card_pending(household: dict[str, Any], *, now: datetime) -> bool:
    """A verification landed lately with an income the file's card does not rest on yet.

    Benefits publishes a card only when it differs from the last one, so a report that finds
    the income the card already uses brings no card, and one that found no income brings none
    either: waiting for a newer card then would keep the frame reloading for nothing.
    """
    verification = household.get("verification") or {}
    landed, income = verification.get("completed_at"), verification.get("per_capita_income_fen")
    if not landed or income is None or household.get("status") in ("rejected", "exited"):
        return False
    landed_at = datetime.fromisoformat(str(landed).replace("Z", "+00:00"))
    if now - landed_at > CARD_PATIENCE:
        return False
    card = household.get("entitlements") or {}
    rests_on = card.get("income_source"), card.get("per_capita_income_fen")
    return rests_on != ("verified", income)


@router.get("/households/{household_id}/results")
async def results(request: Request, household_id: str) -> Response:
    session = signed_in(request)
    household_id = _checked_id(household_id)
    token = await access_token(request, session)
    app = console(request)
    file = await app.registry.household(token, household_id)
    report, newest = await latest_report(app.verification, token, file.body)
    running = newest is not None and newest["status"] in ("queued", "running")
    pending = running or card_pending(file.body, now=datetime.now(UTC))
    # The one page another page of the console may frame (the security headers read this).
    request.state.framed = True
    return render(
        request,
        "results.html",
        session,
        h=file.body,
        report=report,
        newest=newest,
        running=running,
        refresh=REFRESH_SECONDS if pending else None,
    )
