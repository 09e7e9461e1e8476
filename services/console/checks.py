"""核对 from the file: record the members' consents (核对授权书), ask for a verification, and
the latest 核对报告 as a page of its own that prints on A4."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.datastructures import FormData

from services.console import labels
from services.console.pages import _checked_id, _file_action, _text
from services.console.registry import ApiError, Registry
from services.console.verification import report_view
from services.console.web import access_token, console, render, signed_in
from shared.identity import InvalidIdentityNumber, mask_identity_number, parse_identity_number

router = APIRouter()

# What the registry's file is read for when the console asks for a 核对: said in the audit log.
PURPOSE = "核对授权书已录入，申请审核前核对家庭经济状况"
# A consent's default validity when the form does not say (one year from signing).
CONSENT_DAYS = 365


@router.get("/households/{household_id}/report")
async def report_page(request: Request, household_id: str) -> Response:
    """The latest 核对报告, on a page that prints on A4."""
    session = signed_in(request)
    household_id = _checked_id(household_id)
    token = await access_token(request, session)
    app = console(request)
    file = await app.registry.household(token, household_id)
    body = await app.verification.latest_report(token, household_id)
    return render(
        request,
        "report.html",
        session,
        h=file.body,
        report=report_view(body, file.body) if body else None,
    )


@router.post("/households/{household_id}/consents")
async def record_consents(request: Request, household_id: str) -> Response:
    """The 核对授权书 each member signed, then a 核对 of the household under them."""
    verification = console(request).verification

    async def record(registry: Registry, token: str, form: FormData) -> str:
        file = await registry.household(token, household_id)
        consents = _consents(form, file.body, today=date.today())
        for consent in consents:
            await verification.record_consent(token, consent)
        await verification.request(token, household_id, purpose=PURPOSE)
        signed = "、".join(c["signed_by"] for c in consents)
        return f"已录入 {signed} 的核对授权书，已申请核对：结果到达后显示在「核对结果」中。"

    return await _file_action(request, household_id, record)


@router.post("/households/{household_id}/consents/{consent_id}/revoke")
async def revoke_consent(request: Request, household_id: str, consent_id: str) -> Response:
    """撤回授权: a member withdraws a consent (the reason is kept); no query uses it after."""
    verification = console(request).verification

    async def revoke(registry: Registry, token: str, form: FormData) -> str:
        reason = _text(form, "reason")
        if not reason:
            raise _refused("撤回授权必须填写理由（如本人书面撤回）。")
        revoked = await verification.revoke_consent(token, _checked_id(consent_id), reason=reason)
        return f"已撤回 {revoked['signed_by']} 的核对授权书（{revoked['document_ref']}）"

    return await _file_action(request, household_id, revoke)


def _refused(message: str, *errors: labels.FieldError) -> ApiError:
    return ApiError(422, labels.Said(message, tuple(errors)))


def _consents(form: FormData, household: dict[str, Any], *, today: date) -> list[dict[str, Any]]:
    """The consents the form records: one per member whose number was typed, each number
    checked against the member as the file shows them (masked number, birth year, sex), so
    that a consent is never recorded for someone else."""
    common = {
        "signed_on": _text(form, "signed_on") or today.isoformat(),
        "expires_on": _text(form, "expires_on")
        or (today + timedelta(days=CONSENT_DAYS)).isoformat(),
        "document_ref": _text(form, "document_ref"),
        "departments": [str(d) for d in form.getlist("departments")],
    }
    if not common["document_ref"]:
        raise _refused("请填写授权书编号（纸质授权书上的编号）。")
    if not common["departments"]:
        raise _refused("请至少选择一个核对部门。")
    consents = []
    for index, member in enumerate(household["members"]):
        typed = _text(form, f"c{index}_id").upper()
        if not typed:
            continue
        name = member["name"]
        try:
            number = parse_identity_number(typed, today=today)
        except InvalidIdentityNumber:
            raise _refused(f"{name} 的身份证号有误，请按授权书核对。") from None
        same = (
            mask_identity_number(number.number) == member["identity_number"]
            and member.get("birth_year") in (None, number.birth_date.year)
            and member.get("sex") in (None, number.sex)
        )
        if not same:
            raise _refused(f"{name} 的身份证号与档案中的不一致，没有录入。请核对授权书。")
        consents.append(
            {
                "identity_number": number.number,
                "region": household["location"]["region"],
                "household_id": household["id"],
                "signed_by": name,
                **common,
            }
        )
    if not consents:
        raise _refused("请至少填写一位签字成员的身份证号。")
    return consents
