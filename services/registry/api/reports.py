"""Routes across households: lists, statistics, yearly targets and the public notice (公示)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from services.registry import service, store
from services.registry.domain.household import Category, Cause
from services.registry.domain.members import mask_name
from services.registry.domain.workflow import Status
from services.registry.schemas import ID_PATTERN, ListPage, TargetIn
from shared.auth import Principal, require
from shared.problems import Problem
from shared.regions import InvalidRegion, normalize_prefix, parse_region
from shared.service import UnitOfWorkDep

router = APIRouter(prefix="/v1", tags=["reports"])
Reader = Annotated[Principal, Depends(require("registry:read"))]


def _confined(principal: Principal, prefix: str | None) -> list[str]:
    """The caller's regions, narrowed to `prefix` if given (an empty list finds nothing)."""
    if prefix is None:
        return list(principal.regions)
    try:
        wanted = normalize_prefix(prefix)
    except InvalidRegion as exc:
        raise Problem(
            422, "invalid-input", str(exc), errors=[{"field": "region", "reason": str(exc)}]
        ) from exc
    narrowed = [wanted for r in principal.regions if wanted.startswith(r)]
    return narrowed or [r for r in principal.regions if r.startswith(wanted)]


@router.get("/households", summary="List households: filters, cursor pagination, region-confined")
async def list_households(
    uow: UnitOfWorkDep,
    principal: Reader,
    region: Annotated[str | None, Query(description="region prefix, e.g. 4113")] = None,
    status: Status | None = None,
    category: Category | None = None,
    cause: Cause | None = None,
    helper_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    enrolled_from: date | None = None,
    enrolled_to: date | None = None,
    visit_overdue: Annotated[
        bool, Query(description="enrolled households not visited in the last 31 days")
    ] = False,
    objected: Annotated[
        bool, Query(description="households with an objection (异议) not yet resolved")
    ] = False,
    notice_ended: Annotated[
        bool, Query(description="publicly noticed households whose notice (公示) has ended")
    ] = False,
    exit_flagged: Annotated[
        bool, Query(description="enrolled households flagged as able to leave hardship (脱困)")
    ] = False,
    count: Annotated[
        bool, Query(description="also give `total`, how many households match (all pages)")
    ] = False,
    cursor: Annotated[
        str | None, Query(pattern=ID_PATTERN, description="next_cursor of the previous page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> ListPage:
    regions = _confined(principal, region)
    if not regions:
        return ListPage(items=[], next_cursor=None, total=0 if count else None)
    today = date.today()
    matching = store.HouseholdFilter(
        regions,
        status=status.value if status else None,
        category=category.value if category else None,
        cause=cause.value if cause else None,
        helper_id=helper_id,
        enrolled_from=enrolled_from,
        enrolled_to=enrolled_to,
        visit_overdue_before=today - timedelta(days=31) if visit_overdue else None,
        objected=objected,
        notice_ended_by=today if notice_ended else None,
        exit_flagged=exit_flagged,
    )
    rows = await store.list_households(uow.session, matching, after=cursor, limit=limit + 1)
    page = rows[:limit]
    return ListPage(
        items=[service.summary(r) for r in page],
        next_cursor=page[-1]["id"] if len(rows) > limit else None,
        total=await store.count_matching(uow.session, matching) if count else None,
    )


@router.get(
    "/statistics",
    summary="Counts by region × status × category, yearly progress, overdue visits by helper",
)
async def statistics(
    uow: UnitOfWorkDep,
    principal: Reader,
    region: str | None = None,
    year: Annotated[int | None, Query(ge=2000, le=2100)] = None,
) -> dict[str, Any]:
    regions = _confined(principal, region)
    year = year or date.today().year
    counts = await store.count_by_region_status_category(uow.session, regions=regions)
    targets = await store.get_targets(uow.session, year=year)
    progress = []
    for code, on_file, enrolled, exited in await store.enrolments_and_exits(
        uow.session, regions=regions, year=year
    ):
        share = next(
            (targets[p] for p in sorted(targets, key=len, reverse=True) if code.startswith(p)), None
        )
        target = round(on_file * share / 100) if share is not None else None
        progress.append(
            {
                "region": code,
                "on_file_at_start": on_file,
                "enrolled": enrolled,
                "exited": exited,
                "target_share_percent": share,
                "target_exits": target,
                "target_met": exited >= target if target is not None else None,
            }
        )
    overdue = await store.overdue_visits_by_helper(
        uow.session, regions=regions, before=date.today() - timedelta(days=31)
    )
    return {
        "counts": [
            {"region": r, "status": s, "category": c, "households": n} for r, s, c, n in counts
        ],
        "year": year,
        "progress": progress,
        "overdue_visits": [
            {"helper_id": h, "helper_name": mask_name(n or ""), "unit": u, "households": c}
            for h, n, u, c in overdue
        ],
    }


@router.put(
    "/targets/{region}/{year}",
    summary="Set the share of households on file that "
    "should leave hardship in a year (秦工字〔2017〕53号 二(一))",
)
async def set_target(
    region: str,
    year: int,
    body: TargetIn,
    uow: UnitOfWorkDep,
    principal: Annotated[Principal, Depends(require("review:county"))],
) -> dict[str, Any]:
    prefix = normalize_prefix(region)
    if not any(prefix.startswith(r) for r in principal.regions):
        raise Problem(404, "not-found", "no such region among the caller's regions")
    await store.set_target(uow.session, region=prefix, year=year, share_percent=body.share_percent)
    await uow.commit()
    return {"region": prefix, "year": year, "share_percent": body.share_percent}


NOTICE_PAGE_MAX = 1_000


@router.get(
    "/notices/{region}",
    summary="The public notice (公示) of a region: masked, a page at a time with its total",
)
async def public_notice(
    region: str,
    uow: UnitOfWorkDep,
    principal: Reader,
    cursor: Annotated[
        str | None, Query(pattern=ID_PATTERN, description="next_cursor of the previous page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=NOTICE_PAGE_MAX)] = NOTICE_PAGE_MAX,
) -> dict[str, Any]:
    parse_region(region) if len(region) == 6 else normalize_prefix(region)
    regions = _confined(principal, region)
    if not regions:
        raise Problem(404, "not-found", "no public notice of this region for the caller")
    noticed = Status.PUBLICLY_NOTICED.value
    noticed_in_regions = store.HouseholdFilter(regions, status=noticed)
    rows = await store.list_households(
        uow.session, noticed_in_regions, after=cursor, limit=limit + 1
    )
    page = rows[:limit]
    # Objections send a file back to county review; all of them come with the first page.
    objected = (
        await store.open_objections(
            uow.session,
            regions=regions,
            status=Status.COUNTY_APPROVED.value,
            limit=NOTICE_PAGE_MAX + 1,
        )
        if cursor is None
        else []
    )
    objections: dict[str, list[str]] = {}
    for household_id, text in objected[:NOTICE_PAGE_MAX]:
        objections.setdefault(household_id, []).append(text)
    return {
        "region": region,
        "total_noticed": await store.count_matching(uow.session, noticed_in_regions),
        "noticed": [
            {
                "household_id": r["id"],
                "head_name": mask_name(r["head_name"]),
                "head_identity_number": r["head_identity_masked"],
                "category": r["category"],
                "member_count": r["member_count"],
                "community": r["community_name"],
                "notice_ends_on": r["notice_ends_on"],
            }
            for r in page
        ],
        "next_cursor": page[-1]["id"] if len(rows) > limit else None,
        "open_objections": [
            {"household_id": hid, "objections": texts} for hid, texts in objections.items()
        ],
        "open_objections_truncated": len(objected) > NOTICE_PAGE_MAX,
    }
