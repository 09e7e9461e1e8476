"""Excel: import a county ledger (信息台账), export it, and print a household's measures card."""

from datetime import UTC, date, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request, UploadFile
from fastapi.encoders import jsonable_encoder
from fastapi.responses import Response

from services.registry import service, spreadsheets, store
from services.registry.api.households import Purpose, context
from services.registry.api.reports import _confined
from services.registry.domain.household import Category, Cause, Flag, Location, RuleBroken
from services.registry.domain.members import InvalidText
from services.registry.domain.workflow import Channel
from services.registry.schemas import ID_PATTERN
from shared import audit
from shared.identity import InvalidIdentityNumber
from shared.observability import current_traceparent, trace_id_of
from shared.problems import Problem
from shared.regions import InvalidRegion
from shared.service import UnitOfWorkDep

router = APIRouter(prefix="/v1", tags=["excel"])
LEDGER_MAX_BYTES = 5 * 1024 * 1024
EXPORT_MAX_HOUSEHOLDS = 2_000
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

Writer = Annotated[service.Context, Depends(context("registry:write"))]
Reader = Annotated[service.Context, Depends(context("registry:read"))]

_SERVICE_ERRORS = {
    service.PersonAlreadyFiled: ("身份证号", "该人员已在其他在册家庭中"),
    service.PersonFiledElsewhere: (
        "身份证号",
        "该人员已在{province}的在册家庭中，请联系{province}解困办",
    ),
    service.RegionNotAllowed: ("区县代码", "无权在该地区建档"),
}


@router.post(
    "/imports/ledger",
    summary="Import a county ledger (信息台账): each household whole "
    "or not at all, with a row-by-row report",
)
async def import_ledger(file: UploadFile, uow: UnitOfWorkDep, ctx: Writer) -> dict[str, Any]:
    content = await file.read()
    try:
        households = spreadsheets.read_ledger(content, today=ctx.today)
    except spreadsheets.LedgerTooLarge as exc:
        raise Problem(413, "ledger-too-large", str(exc)) from exc
    except spreadsheets.LedgerUnreadable as exc:
        raise Problem(422, "ledger-unreadable", str(exc)) from exc
    imported: dict[str, str] = {}
    errors = [e for h in households for e in h.errors]
    for household in households:
        if household.spec is None:
            continue
        spec = household.spec
        try:
            async with uow.savepoint():  # a household refused takes its events with it
                filed = await service.apply(
                    uow,
                    ctx,
                    location=Location(**spec["location"]),
                    hukou_type=next(
                        (
                            m.get("hukou_type", "urban")
                            for m in spec["members"]
                            if m["relation"] == "head"
                        ),
                        "urban",
                    ),
                    category=Category(spec["category"]),
                    flags=frozenset[Flag](),
                    causes=frozenset(Cause(c) for c in spec["causes"]),
                    channel=Channel.PLACE,
                    submitted_by=None,
                    members=[_member(m) for m in spec["members"]],
                )
        except (
            service.PersonAlreadyFiled,
            service.PersonFiledElsewhere,
            service.RegionNotAllowed,
        ) as exc:
            column, reason = _SERVICE_ERRORS[type(exc)]
            reason = reason.format(province=getattr(exc, "province", ""))
            errors.append(spreadsheets.RowError(household.first_row, column, reason, household.key))
            continue
        except (RuleBroken, InvalidText, InvalidIdentityNumber, InvalidRegion) as exc:
            reason = f"数据不符合建档规则：{exc}"
            column = str(getattr(exc, "field", ""))
            errors.append(spreadsheets.RowError(household.first_row, column, reason, household.key))
            continue
        imported[household.key] = filed.household.id
    await uow.commit()
    return {
        "summary": {
            **spreadsheets.summary(households),
            "imported": len(imported),
            "failed": len(households) - len(imported),
        },
        "imported": imported,
        "errors": [vars(e) for e in sorted(errors, key=lambda e: (e.row, e.column))],
    }


def _member(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "hukou_type": "urban",
        "labour_capacity": "full",
        "employment": "unemployed",
        "union_member": False,
        "labour_contract_months": None,
        "health": {},
        "education_stage": "none",
        "boarding": False,
        "phone": None,
        **spec,
    }


@router.get(
    "/imports/ledger/template",
    summary="An empty ledger to fill in (.xlsx): the columns the import reads, with drop-down "
    "lists and a sheet of instructions",
    response_class=Response,
)
async def ledger_template(ctx: Writer) -> Response:
    return Response(
        spreadsheets.ledger_template(),
        media_type=XLSX,
        headers={"Content-Disposition": 'attachment; filename="ledger-template.xlsx"'},
    )


@router.get(
    "/exports/ledger",
    summary="Export the ledger of a region as .xlsx, a page of households at a time "
    "(numbers masked unless pii:read; the next page is in the Link header)",
    response_class=Response,
)
async def export_ledger(
    request: Request,
    uow: UnitOfWorkDep,
    ctx: Reader,
    region: Annotated[str | None, Query(description="region prefix, e.g. 4113")] = None,
    cursor: Annotated[
        str | None, Query(pattern=ID_PATTERN, description="from the Link of the previous page")
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=EXPORT_MAX_HOUSEHOLDS, description="households in this page")
    ] = EXPORT_MAX_HOUSEHOLDS,
    purpose: Purpose = None,
) -> Response:
    regions = _confined(ctx.principal, region)
    clear = service.PII_READ in ctx.principal.scopes
    if clear and not purpose:
        raise service.PurposeRequired()
    # One query for the page's households, one for their members, one for their causes.
    rows = (
        await store.list_households(
            uow.session, store.HouseholdFilter(regions), after=cursor, limit=limit + 1
        )
        if regions
        else []
    )
    page = rows[:limit]
    ids = [row["id"] for row in page]
    members = await store.get_members_of(uow.session, ids)
    causes = await store.get_causes_of(uow.session, ids)
    households = [
        jsonable_encoder(
            service.view(
                row,
                causes=causes.get(row["id"], []),
                members=members.get(row["id"], []),
                keyring=ctx.keyring if clear else None,
            )
        )
        for row in page
    ]
    if clear and households:
        await audit.append(
            uow.session,
            client_id=ctx.actor,
            action="ledger.pii_export",
            target=region or ",".join(regions),
            outcome="success",
            purpose=purpose,
            trace_id=trace_id_of(current_traceparent()),
            detail={"households": len(households)},
            profile=ctx.keyring.profile,
            now=datetime.now(UTC),
        )
        await uow.commit()
    name = f"ledger-{region or 'all'}-{date.today().isoformat()}.xlsx"
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    if len(rows) > limit:
        query = urlencode(
            {**({"region": region} if region else {}), "cursor": page[-1]["id"], "limit": limit}
        )
        headers["Link"] = f'<{request.url.path}?{query}>; rel="next"'
    return Response(spreadsheets.write_ledger(households), media_type=XLSX, headers=headers)


@router.get(
    "/households/{household_id}/card.xlsx",
    response_class=Response,
    summary="The household's 帮扶措施明白卡 as .xlsx (masked)",
)
async def measures_card(household_id: str, uow: UnitOfWorkDep, ctx: Reader) -> Response:
    row = await store.get_household(uow.session, household_id)
    if row is None or not ctx.principal.covers(row["region"]):
        raise service.HouseholdNotFound(household_id)
    body = service.view(
        row,
        causes=await store.get_causes(uow.session, household_id),
        members=await store.get_members(uow.session, household_id),
        keyring=None,
    )
    return Response(
        spreadsheets.write_card(body, today=ctx.today),
        media_type=XLSX,
        headers={"Content-Disposition": f'attachment; filename="card-{household_id}.xlsx"'},
    )
