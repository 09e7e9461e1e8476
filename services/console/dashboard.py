"""The county's dashboard (县解困办): households by status, category and cause, the year's
exits against the target share (秦工字〔2017〕53号), overdue visits by helper, and the
departments' health as the verification service sees it.

Charts are inline SVG bars drawn by the template (markup, not script: the CSP allows them),
each with its number beside it.
"""

from __future__ import annotations

from collections import Counter
from datetime import date
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.console import labels
from services.console.pages import offered_regions
from services.console.registry import ApiError
from services.console.web import (
    access_token,
    checked_form,
    console,
    redirect,
    render,
    signed_in,
)

router = APIRouter()

COUNTY_ROLE = "县解困办"


def bars(counts: dict[str, int], words: dict[str, str]) -> list[dict[str, Any]]:
    """Rows for the template's bar chart: label, value and the bar's share of the largest."""
    largest = max(counts.values(), default=0) or 1
    codes = [*words, *(code for code in counts if code not in words)]
    return [
        {
            "code": code,
            "label": labels.word(words, code),
            "value": counts.get(code, 0),
            "percent": round(100 * counts.get(code, 0) / largest),
        }
        for code in codes
    ]


@router.get("/dashboard")
async def dashboard(request: Request, year: int | None = None) -> Response:
    session = signed_in(request)
    person = session.person
    assert person is not None
    if person.role != COUNTY_ROLE:
        return render(
            request,
            "error.html",
            session,
            status_code=403,
            message="统计看板供县解困办使用；您的账号可以在「我的工作」和「全部档案」中查看本地区的档案。",
        )
    year = year if year and 2000 <= year <= 2100 else date.today().year
    token = await access_token(request, session)
    app = console(request)
    stats = await app.registry.statistics_of(token, year=year)
    by_status: Counter[str] = Counter()
    by_category: Counter[str] = Counter()
    for row in stats["counts"]:
        by_status[row["status"]] += int(row["households"])
        by_category[row["category"]] += int(row["households"])
    by_cause = {cause: await app.registry.count(token, cause=cause) for cause in labels.CAUSE}
    try:
        departments = await app.verification.departments(token)
    except ApiError:
        departments = None  # the verification service did not answer: said on the page
    return render(
        request,
        "dashboard.html",
        session,
        year=year,
        total=sum(by_status.values()),
        by_status=bars(dict(by_status), labels.STATUS),
        by_category=bars(dict(by_category), labels.CATEGORY),
        by_cause=bars(by_cause, labels.CAUSE),
        progress=stats["progress"],
        overdue=sorted(stats["overdue_visits"], key=lambda r: -int(r["households"])),
        overdue_largest=max((int(r["households"]) for r in stats["overdue_visits"]), default=1),
        departments=departments,
        county=next((r for r in person.regions if len(r) == 6), next(iter(person.regions), "")),
        regions=offered_regions(person, stats["counts"]),  # the target's, as on the list
    )


@router.post("/dashboard/target")
async def set_target(request: Request) -> Response:
    """The year's share of households on file that should leave hardship (秦工字〔2017〕53号
    二(一): 2018 50%, 2019 40%, 2020 10%); the registry checks the region and the scope."""
    session = signed_in(request)
    form = await checked_form(request, session)
    region = str(form.get("region") or "")
    try:
        year = int(str(form.get("year") or ""))
        share = int(str(form.get("share_percent") or ""))
    except ValueError:
        session.flash.append(("error", "请填写年份和比例（0–100 的整数）。"))
        return redirect("/dashboard")
    try:
        await console(request).registry.set_target(
            await access_token(request, session), region, year, share
        )
    except ApiError as error:
        session.flash.append(("error", error.said.text))
        return redirect(f"/dashboard?year={year}")
    session.flash.append(("ok", f"已设定 {region} {year} 年脱困目标：在档家庭的 {share}%"))
    return redirect(f"/dashboard?year={year}")
