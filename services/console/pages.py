"""The pages: work queues, lists, the household file with its workflow step, filing."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import date
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.console import labels
from services.console.queues import county_queues
from services.console.registry import ApiError, File, Registry
from services.console.sessions import Person, Session
from services.console.verification import consents_on_file, latest_report
from services.console.web import (
    FormRejected,
    NotSignedIn,
    access_token,
    checked_form,
    console,
    redirect,
    render,
    session_of,
    signed_in,
)

router = APIRouter()
log = structlog.get_logger(__name__)

QUEUE_ROWS = 20
MEMBER_ROWS = 5  # the head and up to four more on the filing form
_HOUSEHOLD_ID = re.compile(r"^[0-9A-Za-z_.:-]{1,64}$")


def queues(person: Person) -> list[dict[str, Any]]:
    """The work queues of the person's role, each a title and the list API's filters."""
    if person.role == "县解困办":
        return [
            {"title": "待审核", "filters": {"status": "street_reviewed"}},
            {"title": "待开始公示", "filters": {"status": "county_approved"}},
            {"title": "公示中（待纳入）", "filters": {"status": "publicly_noticed"}},
        ]
    if person.role == "街道":
        return [{"title": "待复核", "filters": {"status": "community_reviewed"}}]
    if person.role == "社区":
        return [{"title": "待初审", "filters": {"status": "applied"}}]
    if person.role == "帮扶责任人":
        return [
            {"title": "我帮扶的家庭", "filters": {"helper_id": person.sub}},
            {"title": "走访逾期", "filters": {"helper_id": person.sub, "visit_overdue": "true"}},
        ]
    return []


@router.get("/")
async def home(request: Request) -> Response:
    session = session_of(request)
    if session is None or session.person is None:
        return render(request, "signin.html", session)
    person = signed_in(request).person
    assert person is not None
    token = await access_token(request, session)
    registry = console(request).registry
    by_status: dict[str, int] = {}
    for row in (await registry.statistics(token))["counts"]:
        by_status[row["status"]] = by_status.get(row["status"], 0) + int(row["households"])
    shown = []
    for queue in queues(person):
        filters = queue["filters"]
        page = await registry.households(token, limit=str(QUEUE_ROWS), count="true", **filters)
        count = page["total"]
        shown.append({**queue, "count": count, "items": page["items"], "more": page["next_cursor"]})
    county = (
        await county_queues(registry, token, person, rows=QUEUE_ROWS)
        if person.role == "县解困办"
        else []
    )
    return render(request, "home.html", session, queues=shown, county=county, by_status=by_status)


_LIST_FILTERS = (
    "region",
    "status",
    "category",
    "cause",
    "helper_id",
    "visit_overdue",
    "objected",
    "notice_ended",
    "exit_flagged",
    "cursor",
)


def offered_regions(person: Person, counts: Sequence[Mapping[str, Any]]) -> list[str]:
    """The person's regions and the codes under them that hold households (from the
    registry's counts: GB/T 2260 names below the province are not in the suite)."""
    return sorted(set(person.regions) | {row["region"] for row in counts})


async def region_choices(registry: Registry, token: str, person: Person) -> list[str]:
    """`offered_regions`, with the registry's counts read for them."""
    return offered_regions(person, (await registry.statistics(token))["counts"])


async def _list_page(
    request: Request,
    session: Session,
    page: dict[str, Any],
    *,
    filters: dict[str, str],
    status_code: int = 200,
    search: dict[str, str] | None = None,
    error: str | None = None,
) -> Response:
    assert session.person is not None
    token = await access_token(request, session)
    next_query = {**filters, "cursor": page["next_cursor"]} if page["next_cursor"] else None
    return render(
        request,
        "list.html",
        session,
        status_code=status_code,
        page=page,
        filters=filters,
        next_query=next_query,
        regions=await region_choices(console(request).registry, token, session.person),
        search=search or {},
        error=error,
    )


@router.get("/households")
async def households(request: Request) -> Response:
    session = signed_in(request)
    filters = {k: v for k in _LIST_FILTERS if (v := request.query_params.get(k))}
    page = await console(request).registry.households(
        await access_token(request, session), limit="50", **filters
    )
    return await _list_page(request, session, page, filters=filters)


# Digits (ASCII or full-width) or an X: what is typed is an identity number, not a name.
_NUMBER_LIKE = re.compile(r"^[0-9０-９XxＸｘ\s]+$")


@router.post("/households/search")
async def search_households(request: Request) -> Response:
    """Find a household by a member's identity number or name. A form POST, so that the
    number stays out of URLs, history and access logs; the answer is masked as the list is."""
    session = signed_in(request)
    form = await checked_form(request, session)
    typed = _text(form, "q")
    number = bool(_NUMBER_LIKE.match(typed))
    # The number is not written back into the page: only a name is shown as typed.
    search = {"q": "" if number else typed, "by": "身份证号" if number else "姓名"}
    empty: dict[str, Any] = {"items": [], "next_cursor": None}
    if not typed:
        return await _list_page(
            request,
            session,
            empty,
            filters={},
            status_code=422,
            search=search,
            error="请输入身份证号或姓名。",
        )
    try:
        page = await console(request).registry.search(
            await access_token(request, session),
            identity_number=typed if number else None,
            name=None if number else typed,
        )
    except ApiError as error:
        if error.status == 401:
            raise NotSignedIn() from error
        return await _list_page(
            request,
            session,
            empty,
            filters={},
            status_code=error.status if 400 <= error.status < 500 else 502,
            search=search,
            error=error.said.text,
        )
    return await _list_page(
        request, session, {**page, "next_cursor": None}, filters={}, search=search
    )


@router.get("/households/new")
async def new_household(request: Request) -> Response:
    session = signed_in(request)
    return render(request, "file_form.html", session, **_filing_defaults(session))


def _filing_defaults(session: Session) -> dict[str, Any]:
    assert session.person is not None
    county = next((r for r in session.person.regions if len(r) == 6), "")
    values = {"region": county, "category": "dibao", "causes": []}
    return {"values": values, "said": None, "rows": range(MEMBER_ROWS)}


@router.post("/households/new")
async def file_household(request: Request) -> Response:
    session = signed_in(request)
    form = await checked_form(request, session)
    values: dict[str, Any] = {k: str(form.get(k) or "").strip() for k in form if k != "causes"}
    values["causes"] = [str(c) for c in form.getlist("causes")]
    body, rows = _filing_body(values)
    key = str(form.get("idempotency_key") or uuid.uuid4())
    try:
        filed = await console(request).registry.file(
            await access_token(request, session), body, idempotency_key=key
        )
    except ApiError as error:
        if error.status in (401,):
            raise NotSignedIn() from error
        said = _renumbered(error.said, rows)
        return render(
            request,
            "file_form.html",
            session,
            status_code=error.status if 400 <= error.status < 500 else 502,
            values={**values, "idempotency_key": key},
            said=said,
            rows=range(MEMBER_ROWS),
        )
    session.flash.append(("ok", "已建档，档案编号 " + filed.body["id"]))
    return redirect(f"/households/{filed.body['id']}")


def _filing_body(values: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
    """The API's filing body from the form, and which form row each member sent came from."""
    members, rows = [], []
    for row in range(MEMBER_ROWS):
        name = values.get(f"m{row}_name", "")
        number = values.get(f"m{row}_id", "")
        if row and not (name or number):
            continue  # an empty extra row
        member: dict[str, Any] = {
            "name": name,
            "identity_number": number,
            "relation": "head" if row == 0 else values.get(f"m{row}_relation") or "other",
        }
        if values.get(f"m{row}_phone"):
            member["phone"] = values[f"m{row}_phone"]
        members.append(member)
        rows.append(row)
    location = {"region": values.get("region", ""), "address": values.get("address", "")}
    if values.get("community_name"):
        location["community_name"] = values["community_name"]
    body = {
        "location": location,
        "category": values.get("category", ""),
        "causes": values["causes"],
        "members": members,
    }
    return body, rows


def _renumbered(said: labels.Said, rows: list[int]) -> labels.Said:
    """Field paths `members.<k>.…` of the k-th member sent, as the form row they came from."""

    def row_path(path: str) -> str:
        match = re.match(r"^members\.(\d+)(\..*)?$", path)
        if not match or int(match.group(1)) >= len(rows):
            return path
        return f"members.{rows[int(match.group(1))]}{match.group(2) or ''}"

    fields = tuple(labels.FieldError(row_path(e.field), e.message) for e in said.fields)
    return labels.Said(said.message, fields)


async def _file_page(
    request: Request,
    session: Session,
    household_id: str,
    *,
    status_code: int = 200,
    error: str | None = None,
    comment: str = "",
) -> Response:
    token = await access_token(request, session)
    registry = console(request).registry
    file = await registry.household(token, household_id)
    history = await registry.history(token, household_id)
    visits = await registry.visits(token, household_id)
    recorded = file.body["enrolled_on"] is not None  # incomes are kept from enrolment on
    incomes = await registry.incomes(token, household_id) if recorded else []
    report, newest = await latest_report(console(request).verification, token, file.body)
    declarations = await registry.declarations(token, household_id)
    may_check = session.person is not None and "verification:request" in session.person.scopes
    consents = (
        await consents_on_file(console(request).verification, token, household_id)
        if may_check
        else []
    )
    return render(
        request,
        "household.html",
        session,
        status_code=status_code,
        h=file.body,
        version=file.version,
        history=list(reversed(history)),
        visits=list(reversed(visits)),
        incomes=list(reversed(incomes)),
        declarations=declarations,
        consents=consents,
        today=date.today().isoformat(),
        report=report,
        newest=newest,
        error=error,
        comment=comment,
    )


def _checked_id(household_id: str) -> str:
    if not _HOUSEHOLD_ID.match(household_id):
        raise StarletteHTTPException(404)
    return household_id


@router.get("/households/{household_id}")
async def household(request: Request, household_id: str) -> Response:
    session = signed_in(request)
    return await _file_page(request, session, _checked_id(household_id))


@router.post("/households/{household_id}/steps")
async def take_step(request: Request, household_id: str) -> Response:
    """A workflow step with the ETag the person's page was rendered with (If-Match)."""
    session = signed_in(request)
    household_id = _checked_id(household_id)
    form = await checked_form(request, session)
    step = str(form.get("step") or "")
    comment = str(form.get("comment") or "").strip()
    version = str(form.get("version") or "")
    if step not in labels.STEP:
        return await _file_page(
            request, session, household_id, status_code=422, error="请选择要进行的步骤。"
        )
    if step in labels.STEPS_NEEDING_A_REASON and not comment:
        return await _file_page(
            request,
            session,
            household_id,
            status_code=422,
            error=f"「{labels.STEP[step]}」必须填写意见（理由）。",
        )
    try:
        done: File = await console(request).registry.take_step(
            await access_token(request, session),
            household_id,
            step,
            version=version,
            comment=comment or None,
            exit_kind=str(form.get("exit_kind") or "") if step == "exit" else None,
        )
    except ApiError as error:
        return await _refused_by_registry(request, session, household_id, error, comment=comment)
    now = labels.word(labels.STATUS, done.body["status"])
    session.flash.append(("ok", f"已完成「{labels.STEP[step]}」，档案状态：{now}"))
    return redirect(f"/households/{household_id}")


FileAction = Callable[[Registry, str, FormData], Awaitable[str]]


async def _refused_by_registry(
    request: Request, session: Session, household_id: str, error: ApiError, *, comment: str = ""
) -> Response:
    """The file again with the registry's refusal said in Chinese: a stale version is the
    conflict (409), a server error the registry's (502); a typed comment kept."""
    if error.status == 401:
        raise NotSignedIn() from error
    status = 409 if error.status == 412 else error.status
    return await _file_page(
        request,
        session,
        household_id,
        status_code=status if 400 <= status < 500 else 502,
        error=error.said.text,
        comment=comment,
    )


class _Refused(Exception):
    """A form the console refuses before asking the registry, said for the person."""


async def _file_action(request: Request, household_id: str, action: FileAction) -> Response:
    """A form on the file: CSRF checked, the registry called with the person's token, the
    file shown again with the problem said in Chinese (a stale version as the conflict), or
    the file with `action`'s message once done."""
    session = signed_in(request)
    household_id = _checked_id(household_id)
    form = await checked_form(request, session)
    registry = console(request).registry
    try:
        done = await action(registry, await access_token(request, session), form)
    except _Refused as refused:
        return await _file_page(request, session, household_id, status_code=422, error=str(refused))
    except ApiError as error:
        return await _refused_by_registry(request, session, household_id, error)
    session.flash.append(("ok", done))
    return redirect(f"/households/{household_id}")


def _text(form: FormData, name: str) -> str:
    return str(form.get(name) or "").strip()


@router.post("/households/{household_id}/plan")
async def add_plan_measure(request: Request, household_id: str) -> Response:
    """One more measure in the help plan (一户一计划): the plan as read, plus this one."""

    async def add(registry: Registry, token: str, form: FormData) -> str:
        measure = {k: _text(form, k) for k in ("group", "measure", "lead_department")}
        current = await registry.household(token, household_id)
        # Sent with the version the person saw: a newer file is refused by If-Match.
        await registry.set_plan(
            token, household_id, [*current.body["plan"], measure], version=_text(form, "version")
        )
        return "已加入帮扶计划：" + measure["measure"]

    return await _file_action(request, household_id, add)


@router.post("/households/{household_id}/helper")
async def assign_helper(request: Request, household_id: str) -> Response:
    """Assign or replace the helper (帮扶责任人); their id is what their queue is found by."""

    async def assign(registry: Registry, token: str, form: FormData) -> str:
        helper = {k: _text(form, k) for k in ("id", "name", "unit", "phone", "reason")}
        body = {k: v for k, v in helper.items() if v or k in ("id", "name", "unit")}
        await registry.assign_helper(token, household_id, body)
        return f"已指定帮扶责任人：{helper['name']}"

    return await _file_action(request, household_id, assign)


@router.post("/households/{household_id}/visits")
async def record_visit(request: Request, household_id: str) -> Response:
    """A home visit (入户走访) by the helper: the date, what was found, whether to follow up."""

    async def record(registry: Registry, token: str, form: FormData) -> str:
        visited_on = _text(form, "visited_on")
        body = {
            "visited_on": visited_on,
            "findings": _text(form, "findings"),
            "follow_up_needed": form.get("follow_up_needed") == "yes",
        }
        await registry.record_visit(token, household_id, body)
        return f"已记录 {visited_on} 的走访"

    return await _file_action(request, household_id, record)


_MONTH = re.compile(r"^[0-9]{4}-(0[1-9]|1[0-2])$")
_YUAN = re.compile(r"^[0-9]{1,9}(\.[0-9]{1,2})?$")


def _fen(yuan: str) -> int:
    """Yuan as typed (at most two decimals) in integer fen, exactly: no float on the way."""
    whole, _, cents = yuan.partition(".")
    return int(whole) * 100 + int(cents.ljust(2, "0") or "0")


@router.post("/households/{household_id}/incomes")
async def record_income(request: Request, household_id: str) -> Response:
    """A month's income (月收入) of an enrolled household, typed in yuan, sent in fen."""

    async def record(registry: Registry, token: str, form: FormData) -> str:
        month, amount = _text(form, "month"), _text(form, "income_yuan").replace(",", "")
        if not _MONTH.match(month):
            raise _Refused("请选择月份（年-月）。")
        if not _YUAN.match(amount):
            raise _Refused("月收入请填写金额（元），最多两位小数，例如 1250.50。")
        await registry.record_income(token, household_id, month=month, income_fen=_fen(amount))
        return f"已登记 {month} 的月收入：{amount} 元"

    return await _file_action(request, household_id, record)


@router.post("/households/{household_id}/members")
async def add_member(request: Request, household_id: str) -> Response:
    """A member joins the household (新增成员), with the version the page was read at."""

    async def add(registry: Registry, token: str, form: FormData) -> str:
        member = {
            "name": _text(form, "name"),
            "identity_number": _text(form, "identity_number"),
            "relation": _text(form, "relation"),
        }
        if _text(form, "phone"):
            member["phone"] = _text(form, "phone")
        await registry.add_member(token, household_id, member, version=_text(form, "version"))
        return f"已新增家庭成员：{member['name']}"

    return await _file_action(request, household_id, add)


# A member's circumstances as the edit form gives them: select fields, sent when chosen.
_MEMBER_CHOICES = {
    "relation": labels.RELATION,
    "hukou_type": labels.HUKOU,
    "labour_capacity": labels.LABOUR,
    "employment": labels.EMPLOYMENT,
    "education_stage": labels.EDUCATION,
}
_YES_NO = {"yes": True, "no": False}


def member_changes(form: FormData) -> dict[str, Any]:
    """The PATCH body for what the person changed in a member's form: each select that was
    given, the union and boarding flags, the contract's months and the health flags. The
    registry checks the values; a value outside the lists is refused here first."""
    changes: dict[str, Any] = {}
    for name, choices in _MEMBER_CHOICES.items():
        value = _text(form, name)
        if value:
            if value not in choices:
                raise _Refused("请从列表中选择。")
            changes[name] = value
    for name in ("union_member", "boarding"):
        if _text(form, name) in _YES_NO:
            changes[name] = _YES_NO[_text(form, name)]
    months = _text(form, "labour_contract_months")
    if months:
        if not months.isdigit() or int(months) > 600:
            raise _Refused("劳动合同期限请填 0 到 600 之间的整数（月）。")
        changes["labour_contract_months"] = int(months)
    grade = _text(form, "disability_grade")
    if grade and grade not in ("1", "2", "3", "4"):
        raise _Refused("残疾等级请选择一至四级，或不填。")
    changes["health"] = {
        "major_illness": form.get("major_illness") == "on",
        "chronic_illness": form.get("chronic_illness") == "on",
        "disability_grade": int(grade) if grade else None,
    }
    return changes


@router.post("/households/{household_id}/members/{member_id}")
async def update_member(request: Request, household_id: str, member_id: str) -> Response:
    """A member's circumstances (劳动能力, 就业, 健康, 在学 ...), which the rules read."""

    async def update(registry: Registry, token: str, form: FormData) -> str:
        done = await registry.update_member(
            token,
            household_id,
            _checked_id(member_id),
            member_changes(form),
            version=_text(form, "version"),
        )
        name = next((m["name"] for m in done.body["members"] if m["id"] == member_id), "")
        return f"已更新家庭成员情况：{name}"

    return await _file_action(request, household_id, update)


@router.post("/households/{household_id}/declarations")
async def declare(request: Request, household_id: str) -> Response:
    """One declared income or asset (家庭收入、财产申报) of a member, in yuan."""

    async def add(registry: Registry, token: str, form: FormData) -> str:
        item = _text(form, "item")
        if item not in labels.DECLARED_ITEM:
            raise _Refused("请选择申报项目。")
        kind, label = labels.DECLARED_ITEM[item]
        amount, month = _text(form, "amount_yuan").replace(",", ""), _text(form, "month")
        if not _YUAN.match(amount):
            raise _Refused("金额请填写元，最多两位小数，例如 1250.50。")
        if month and not _MONTH.match(month):
            raise _Refused("月份请按年-月选择。")
        if kind == "income" and not month:
            raise _Refused("收入须填写所属月份。")
        declared: dict[str, Any] = {
            "member_id": _checked_id(_text(form, "member_id")),
            "kind": kind,
            "item": item,
            "amount_fen": _fen(amount),
        }
        if month:
            declared["month"] = month
        if _text(form, "note"):
            declared["note"] = _text(form, "note")
        await registry.declare(token, household_id, [declared], version=_text(form, "version"))
        return f"已登记申报：{label}"

    return await _file_action(request, household_id, add)


@router.post("/households/{household_id}/members/{member_id}/remove")
async def remove_member(request: Request, household_id: str, member_id: str) -> Response:
    """A member leaves the household (减少成员): the reason is kept in the file's history."""

    async def remove(registry: Registry, token: str, form: FormData) -> str:
        reason = _text(form, "reason")
        if not reason:
            raise _Refused("移除家庭成员必须填写理由（如迁出、死亡）。")
        await registry.remove_member(
            token,
            household_id,
            _checked_id(member_id),
            reason=reason,
            version=_text(form, "version"),
        )
        return f"已移除家庭成员（{reason}）"

    return await _file_action(request, household_id, remove)


@router.get("/households/{household_id}/card.xlsx")
async def card(request: Request, household_id: str) -> Response:
    """The 明白卡 as the registry renders it (masked), downloaded with the person's token."""
    session = signed_in(request)
    household_id = _checked_id(household_id)
    content = await console(request).registry.card(
        await access_token(request, session), household_id
    )
    return Response(
        content,
        media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        headers={"Content-Disposition": f'attachment; filename="card-{household_id}.xlsx"'},
    )


def install_error_pages(app: FastAPI) -> None:
    """Every error as a page in Chinese; the details go to the log, never to the browser."""

    @app.exception_handler(NotSignedIn)
    async def _not_signed_in(request: Request, exc: NotSignedIn) -> Response:
        back = request.url.path if request.method == "GET" else "/"
        return redirect(f"/auth/login?next={back}")

    @app.exception_handler(FormRejected)
    async def _form_rejected(request: Request, exc: FormRejected) -> Response:
        log.warning("console.form_rejected", path=request.url.path, reason=str(exc))
        message = "表单已失效或来源不明，没有提交。请返回页面刷新后再试。"
        return render(request, "error.html", session_of(request), status_code=403, message=message)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        if exc.status == 401:
            return redirect("/auth/login")
        status = exc.status if 400 <= exc.status < 600 else 502
        return render(
            request, "error.html", session_of(request), status_code=status, message=exc.said.message
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        message = "没有这个页面。" if exc.status_code == 404 else "请求有误。"
        return render(
            request, "error.html", session_of(request), status_code=exc.status_code, message=message
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("console.unhandled_error", path=request.url.path)
        return render(
            request, "error.html", None, status_code=500, message="系统出错了，已记录。请稍后再试。"
        )
