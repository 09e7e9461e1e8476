"""Routes on one household: filing, edits, members, workflow steps, helper, visits, incomes."""

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse

from services.registry import service, store
from services.registry.domain.household import Helper, Location, PlanMeasure
from services.registry.domain.members import Health, clean_text
from services.registry.domain.workflow import Step
from services.registry.schemas import (
    DeclarationIn,
    HelperIn,
    HouseholdBatch,
    HouseholdBatchGet,
    HouseholdIn,
    HouseholdPatch,
    IncomeIn,
    MemberIn,
    MemberPatch,
    PlanIn,
    StepIn,
    VisitIn,
)
from shared import idempotency
from shared.auth import Principal, purpose, require
from shared.crypto import Keyring
from shared.db import UnitOfWork
from shared.problems import Problem
from shared.service import FastJSONResponse, UnitOfWorkDep, UnitOfWorkOneWriteDep, get_runtime

router = APIRouter(prefix="/v1/households", tags=["households"])


def context(*scopes: str) -> Callable[..., Awaitable[service.Context]]:
    """A dependency: the caller (with these scopes), the keys, today, the notice period."""

    async def dependency(
        request: Request, principal: Annotated[Principal, Depends(require(*scopes))]
    ) -> service.Context:
        keyring: Keyring = request.app.state.keyring
        settings = request.app.state.settings
        return service.Context(
            principal=principal,
            keyring=keyring,
            today=date.today(),
            notice_days=settings.notice_days,
        )

    return dependency


Reader = Annotated[service.Context, Depends(context("registry:read"))]
Writer = Annotated[service.Context, Depends(context("registry:write"))]
Reviewer = Annotated[service.Context, Depends(context())]  # each step checks its own scope


async def if_match(
    value: Annotated[
        str | None, Header(alias="If-Match", description='The ETag read before, e.g. "3"')
    ] = None,
) -> int:
    """The version the caller last saw; updates without it are refused (428).

    Async though it awaits nothing: FastAPI runs a plain `def` dependency in its thread pool.
    """
    if value is None:
        raise Problem(
            428, "precondition-required", "send If-Match with the ETag of the household you read"
        )
    try:
        return int(value.strip().removeprefix("W/").strip('"'))
    except ValueError as exc:
        raise Problem(
            412, "precondition-failed", f"If-Match {value!r} is not an ETag of this API"
        ) from exc


IfMatch = Annotated[int, Depends(if_match)]
Purpose = Annotated[
    str | None,
    purpose(
        "Why the caller reads identity numbers in clear: required with pii:read, recorded "
        "with every unmasked read"
    ),
]


async def _current(uow: UnitOfWork, household_id: str) -> tuple[dict[str, Any], int]:
    """The file as it now is (PII masked), and its version."""
    row = await store.get_household(uow.session, household_id)
    assert row is not None
    body = service.view(
        row,
        causes=await store.get_causes(uow.session, household_id),
        members=await store.get_members(uow.session, household_id),
        keyring=None,
    )
    return body, row["version"]


async def _answer(
    uow: UnitOfWork,
    household_id: str,
    *,
    status_code: int = 200,
    extra_headers: dict[str, str] | None = None,
) -> JSONResponse:
    """Commit, then answer with the file and its ETag."""
    await uow.commit()
    body, version = await _current(uow, household_id)
    return FastJSONResponse(
        body, status_code=status_code, headers={"ETag": f'"{version}"', **(extra_headers or {})}
    )


def _location(data: Any) -> Location:
    return Location(
        region=data.region,
        address=clean_text(data.address, field_name="location.address", max_length=200),
        street_code=data.street_code,
        street_name=data.street_name,
        community_code=data.community_code,
        community_name=data.community_name,
    )


def _member_spec(member: MemberIn) -> dict[str, Any]:
    spec = member.model_dump()
    spec["name"] = clean_text(member.name, field_name="members.name", max_length=50)
    return spec


IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", description="Retry safely: the same key replays the answer"),
]


async def filing_unit_of_work(
    request: Request, idempotency_key: IdempotencyKey = None
) -> AsyncIterator[UnitOfWork]:
    """A filing is one write, unless its answer is remembered under an Idempotency-Key in the
    same transaction (`Database.unit_of_work`)."""
    async with get_runtime(request).db.unit_of_work(
        by_key=True, one_write=not idempotency_key
    ) as uow:
        yield uow


@router.post(
    "",
    status_code=201,
    summary="Apply: open a household's file (申请)",
    responses={409: {"description": "a member is already in an active household"}},
)
async def apply(
    body: HouseholdIn,
    request: Request,
    uow: Annotated[UnitOfWork, Depends(filing_unit_of_work)],
    ctx: Writer,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    digest = ""  # the request's hash, needed only to replay or remember it under a key
    if idempotency_key:
        digest = idempotency.request_hash(
            ctx.principal, "POST", request.url.path, body.model_dump(mode="json")
        )
        stored = await idempotency.replay(
            uow.session, client_id=ctx.actor, key=idempotency_key, digest=digest
        )
        if stored:
            return JSONResponse(stored.body, stored.status_code, headers=stored.headers)
    filed = await service.apply(
        uow,
        ctx,
        location=_location(body.location),
        hukou_type=body.hukou_type.value,
        category=body.category,
        flags=frozenset(body.flags),
        causes=frozenset(body.causes),
        channel=body.channel,
        submitted_by=body.submitted_by,
        members=[_member_spec(m) for m in body.members],
    )
    household = filed.household
    answer = filed.view()
    headers = {"ETag": f'"{household.version}"', "Location": f"/v1/households/{household.id}"}
    if idempotency_key:
        await idempotency.remember(
            uow.session,
            client_id=ctx.actor,
            key=idempotency_key,
            digest=digest,
            # Its JSON column (orjson) writes dates as ISO text, as the answer does.
            response=idempotency.StoredResponse(201, answer, headers),
        )
    await uow.commit()
    return FastJSONResponse(answer, status_code=201, headers=headers)


@router.get("/{household_id}", summary="One household's file (一户一档)")
async def read(
    household_id: str,
    uow: UnitOfWorkDep,
    ctx: Reader,
    purpose: Purpose = None,
) -> JSONResponse:
    body = await service.read(uow, ctx, household_id, purpose=purpose, now=datetime.now(UTC))
    await uow.commit()  # the audit record of an unmasked read
    return FastJSONResponse(body, headers={"ETag": f'"{body["version"]}"'})


@router.post(
    ":batch-get",
    summary="Many households' files in one call, each as the single read answers it",
    description=(
        "For a service catching up on events: confined, masked and audited as "
        "`GET /v1/households/{household_id}` (with pii:read, the `Bangfu-Purpose` header is "
        "required and each household found is audited). An id missing or outside the token's "
        "regions is listed in `not_found`, alike."
    ),
)
async def read_many(
    body: HouseholdBatchGet, uow: UnitOfWorkDep, ctx: Reader, purpose: Purpose = None
) -> HouseholdBatch:
    read = await service.read_many(
        uow,
        ctx,
        body.ids,
        purpose=purpose,
        with_declarations="declarations" in body.include,
        now=datetime.now(UTC),
    )
    await uow.commit()  # the audit records of unmasked reads
    return HouseholdBatch(
        items=read.files, not_found=read.not_found, declarations=read.declarations
    )


def _same(value: Any) -> Any:
    return value


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "location": _location,
    "hukou_type": lambda value: value.value,
    "flags": frozenset,
    "causes": frozenset,
}


@router.patch("/{household_id}", summary="Change editable fields (needs If-Match)")
async def patch(
    household_id: str,
    body: HouseholdPatch,
    uow: UnitOfWorkOneWriteDep,
    ctx: Writer,
    version: IfMatch,
) -> JSONResponse:
    values: dict[str, Any] = {}
    for name in body.model_fields_set:
        value = getattr(body, name)
        if value is None:
            raise Problem(
                422,
                "invalid-input",
                f"{name} cannot be null",
                errors=[{"field": name, "reason": "cannot be null"}],
            )
        values[name] = _CONVERTERS.get(name, _same)(value)
    changed = await service.change(uow, ctx, household_id, if_match=version, values=values)
    await uow.commit()
    return FastJSONResponse(changed.view(), headers={"ETag": f'"{changed.household.version}"'})


@router.post(
    "/{household_id}/steps/{step}",
    summary="Take a workflow step (needs If-Match)",
    responses={409: {"description": "not allowed now; the body lists allowed_steps"}},
)
async def take_step(
    household_id: str, step: Step, body: StepIn, uow: UnitOfWorkDep, ctx: Reviewer, version: IfMatch
) -> JSONResponse:
    await service.take_step(
        uow,
        ctx,
        household_id,
        step,
        if_match=version,
        comment=body.comment,
        exit_kind=body.exit_kind,
    )
    return await _answer(uow, household_id)


@router.post("/{household_id}/members", status_code=201, summary="Add a member")
async def add_member(
    household_id: str, body: MemberIn, uow: UnitOfWorkDep, ctx: Writer, version: IfMatch
) -> JSONResponse:
    await service.add_member(uow, ctx, household_id, if_match=version, spec=_member_spec(body))
    return await _answer(uow, household_id, status_code=201)


@router.patch(
    "/{household_id}/members/{member_id}",
    summary="Change a member's circumstances (needs If-Match)",
)
async def update_member(
    household_id: str,
    member_id: str,
    body: MemberPatch,
    uow: UnitOfWorkDep,
    ctx: Writer,
    version: IfMatch,
) -> JSONResponse:
    values: dict[str, Any] = {}
    for name in body.model_fields_set:
        value = getattr(body, name)
        if value is None and name not in ("labour_contract_months", "phone", "health"):
            raise Problem(
                422,
                "invalid-input",
                f"{name} cannot be null",
                errors=[{"field": name, "reason": "cannot be null"}],
            )
        if name == "name":
            value = clean_text(value or "", field_name="name", max_length=50)
        elif name == "health":
            value = Health(**value.model_dump()) if value else Health()
        values[name] = value
    await service.update_member(uow, ctx, household_id, member_id, if_match=version, values=values)
    return await _answer(uow, household_id)


@router.delete("/{household_id}/members/{member_id}", summary="Remove a member")
async def remove_member(
    household_id: str,
    member_id: str,
    uow: UnitOfWorkDep,
    ctx: Writer,
    version: IfMatch,
    reason: str,
) -> JSONResponse:
    await service.remove_member(uow, ctx, household_id, member_id, if_match=version, reason=reason)
    return await _answer(uow, household_id)


@router.put("/{household_id}/plan", summary="Set the help plan (一户一计划)")
async def set_plan(
    household_id: str, body: PlanIn, uow: UnitOfWorkDep, ctx: Writer, version: IfMatch
) -> JSONResponse:
    plan = tuple(
        PlanMeasure(m.group, m.measure, m.lead_department, m.status) for m in body.measures
    )
    await service.set_plan(uow, ctx, household_id, if_match=version, plan=plan)
    return await _answer(uow, household_id)


@router.put("/{household_id}/helper", summary="Assign or replace the helper (帮扶责任人)")
async def assign_helper(
    household_id: str, body: HelperIn, uow: UnitOfWorkDep, ctx: Writer
) -> JSONResponse:
    helper = Helper(
        body.id, clean_text(body.name, field_name="name", max_length=50), body.unit, body.phone
    )
    await service.assign_helper(uow, ctx, household_id, helper=helper, reason=body.reason)
    return await _answer(uow, household_id)


@router.get("/{household_id}/helpers", summary="Helper assignments, newest last")
async def helper_history(
    household_id: str, uow: UnitOfWorkDep, ctx: Reader
) -> list[dict[str, Any]]:
    await service.load(uow, ctx, household_id)
    return await store.get_helper_assignments(uow.session, household_id)


@router.post("/{household_id}/visits", status_code=201, summary="Record a home visit")
async def record_visit(
    household_id: str, body: VisitIn, uow: UnitOfWorkDep, ctx: Writer
) -> JSONResponse:
    await service.record_visit(
        uow,
        ctx,
        household_id,
        visited_on=body.visited_on,
        findings=body.findings,
        follow_up_needed=body.follow_up_needed,
    )
    return await _answer(uow, household_id, status_code=201)


@router.get("/{household_id}/visits", summary="Home visits, oldest first")
async def visits(household_id: str, uow: UnitOfWorkDep, ctx: Reader) -> list[dict[str, Any]]:
    await service.load(uow, ctx, household_id)
    return await store.get_visits(uow.session, household_id)


@router.post(
    "/{household_id}/declarations", status_code=201, summary="Declare members' income and assets"
)
async def declare(
    household_id: str, body: DeclarationIn, uow: UnitOfWorkDep, ctx: Writer, version: IfMatch
) -> JSONResponse:
    await service.declare(
        uow, ctx, household_id, if_match=version, items=[i.model_dump() for i in body.items]
    )
    return await _answer(uow, household_id, status_code=201)


@router.get("/{household_id}/declarations", summary="Declared income and assets")
async def declarations(household_id: str, uow: UnitOfWorkDep, ctx: Reader) -> list[dict[str, Any]]:
    await service.load(uow, ctx, household_id)
    return await store.get_declarations(uow.session, household_id)


@router.put("/{household_id}/incomes/{month}", summary="Record a month's income (enrolled)")
async def record_income(
    household_id: str, month: str, body: IncomeIn, uow: UnitOfWorkDep, ctx: Writer
) -> JSONResponse:
    if body.month != month:
        raise Problem(
            422,
            "invalid-input",
            "the month in the path and the body differ",
            errors=[{"field": "month", "reason": "differs from the path"}],
        )
    await service.record_income(uow, ctx, household_id, month=month, income_fen=body.income_fen)
    return await _answer(uow, household_id)


@router.get("/{household_id}/incomes", summary="Monthly incomes after enrolment")
async def incomes(household_id: str, uow: UnitOfWorkDep, ctx: Reader) -> list[dict[str, Any]]:
    await service.load(uow, ctx, household_id)
    return await store.get_monthly_incomes(uow.session, household_id)


@router.get("/{household_id}/history", summary="Every change: who, when, what, old → new")
async def history(household_id: str, uow: UnitOfWorkDep, ctx: Reader) -> list[dict[str, Any]]:
    await service.load(uow, ctx, household_id)
    return await store.get_history(uow.session, household_id)
