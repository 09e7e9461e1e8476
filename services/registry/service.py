"""The registry's use cases: each takes a unit of work and never commits it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any, NoReturn

from services.registry import store
from services.registry.domain.events import HouseholdChanged, HouseholdEvent
from services.registry.domain.household import (
    Category,
    Cause,
    Flag,
    Helper,
    Household,
    Location,
    PlanGroup,
    PlanMeasure,
)
from services.registry.domain.members import (
    EducationStage,
    Employment,
    Health,
    HukouType,
    LabourCapacity,
    Member,
    Relation,
    mask_name,
)
from services.registry.domain.workflow import (
    ACTIVE,
    Channel,
    ExitKind,
    Status,
    Step,
    allowed_steps,
    required_scope,
)
from shared import audit
from shared.auth import Principal
from shared.crypto import Keyring, blind_index, decrypt, encrypt
from shared.db import UnitOfWork
from shared.events.envelope import CloudEvent, new_event, new_event_id
from shared.identity import mask_identity_number, mask_phone, parse_identity_number
from shared.observability import current_traceparent, trace_id_of
from shared.regions import FILING_PROVINCES, parse_region
from shared.registry_client import ATTACHED_RESULTS

PII_READ = "pii:read"
IDENTITY = "member.identity_number"
PHONE = "member.phone"
HELPER_PHONE = "household.helper_phone"
INDEX_PURPOSE = "identity_number"


class HouseholdNotFound(Exception):
    """No such household, or not one the caller may see."""


class RegionNotAllowed(Exception):
    """The caller may not file households in this region."""


class MissingScope(Exception):
    """The step needs a scope the caller lacks."""

    def __init__(self, scope: str):
        super().__init__(f"the token lacks the scope {scope}")
        self.scope = scope


class PersonAlreadyFiled(Exception):
    """One person, one active household: this person is in another active household."""

    def __init__(self, household_id: str, masked_identity: str):
        super().__init__(f"{masked_identity} is already in active household {household_id}")
        self.household_id = household_id


class PersonFiledElsewhere(Exception):
    """The person is in an active household outside the caller's regions: only its province
    is named (whose 解困办 resolves it), never the household or its county."""

    def __init__(self, province: str, masked_identity: str):
        super().__init__(
            f"{masked_identity} is already in an active household in another region; "
            f"contact the 解困办 of {province}"
        )
        self.province = province


class PurposeRequired(Exception):
    """A read of identity numbers in clear (pii:read) that does not say why."""

    def __init__(self) -> None:
        super().__init__(
            "a read with pii:read answers identity numbers in clear and needs the "
            "Bangfu-Purpose header (why, UTF-8 percent-encoded); it is kept in the audit log"
        )


class VersionMismatch(Exception):
    """The caller's If-Match names a version that is no longer current."""

    def __init__(self, current: int):
        super().__init__(f"the household is at version {current}")
        self.current = current


@dataclass(frozen=True)
class Context:
    """Who is acting, with which keys, on which day."""

    principal: Principal
    keyring: Keyring
    today: date
    # 公示 days by region prefix; "" is the default (7 unless configured).
    notice_days: Mapping[str, int] = field(default_factory=lambda: {"": 7})

    @property
    def actor(self) -> str:
        return self.principal.client_id


# -- mapping between rows and the aggregate ------------------------------------------------


def _member_from_row(row: Mapping[str, Any], keyring: Keyring, today: date) -> Member:
    number = decrypt(keyring, row["identity_cipher"], context=IDENTITY)
    return Member(
        id=row["id"],
        name=row["name"],
        identity=parse_identity_number(number, today=today),
        relation=Relation(row["relation"]),
        hukou_type=HukouType(row["hukou_type"]),
        labour_capacity=LabourCapacity(row["labour_capacity"]),
        employment=Employment(row["employment"]),
        union_member=row["union_member"],
        labour_contract_months=row["labour_contract_months"],
        health=Health(row["major_illness"], row["chronic_illness"], row["disability_grade"]),
        education_stage=EducationStage(row["education_stage"]),
        boarding=row["boarding"],
        phone=decrypt(keyring, row["phone_cipher"], context=PHONE) if row["phone_cipher"] else None,
    )


def _member_row(
    member: Member, *, household_id: str, position: int, keyring: Keyring
) -> dict[str, Any]:
    number = member.identity.number
    return {
        "id": member.id,
        "household_id": household_id,
        "position": position,
        "name": member.name,
        "relation": member.relation.value,
        "identity_cipher": encrypt(keyring, number, context=IDENTITY),
        "identity_index": blind_index(keyring, number, purpose=INDEX_PURPOSE),
        "identity_masked": mask_identity_number(number),
        "birth_date": member.identity.birth_date,
        "sex": member.identity.sex,
        "hukou_type": member.hukou_type.value,
        "labour_capacity": member.labour_capacity.value,
        "employment": member.employment.value,
        "union_member": member.union_member,
        "labour_contract_months": member.labour_contract_months,
        "major_illness": member.health.major_illness,
        "chronic_illness": member.health.chronic_illness,
        "disability_grade": member.health.disability_grade,
        "education_stage": member.education_stage.value,
        "boarding": member.boarding,
        "phone_cipher": encrypt(keyring, member.phone, context=PHONE) if member.phone else None,
        "phone_masked": mask_phone(member.phone) if member.phone else None,
    }


def _household_row(h: Household, keyring: Keyring) -> dict[str, Any]:
    loc = h.location
    helper = h.helper
    return {
        "region": loc.region,
        "street_code": loc.street_code,
        "street_name": loc.street_name,
        "community_code": loc.community_code,
        "community_name": loc.community_name,
        "address": loc.address,
        "hukou_type": h.hukou_type,
        "category": h.category.value,
        "flags": sorted(f.value for f in h.flags),
        "channel": h.channel.value,
        "submitted_by": h.submitted_by,
        "status": h.status.value,
        "version": h.version,
        "notice_ends_on": h.notice_ends_on,
        "rejection_reason": h.rejection_reason,
        "exit_kind": h.exit_kind.value if h.exit_kind else None,
        "exit_reason": h.exit_reason,
        "enrolled_on": h.enrolled_on,
        "exited_on": h.exited_on,
        "plan": [
            {
                "group": m.group.value,
                "measure": m.measure,
                "lead_department": m.lead_department,
                "status": m.status,
            }
            for m in h.plan
        ],
        "helper_id": helper.id if helper else None,
        "helper_name": helper.name if helper else None,
        "helper_unit": helper.unit if helper else None,
        "helper_phone_cipher": encrypt(keyring, helper.phone, context=HELPER_PHONE)
        if helper and helper.phone
        else None,
        "helper_phone_masked": mask_phone(helper.phone) if helper and helper.phone else None,
        "last_visit_on": h.last_visit_on,
        "head_name": h.head.name,
        "head_identity_masked": mask_identity_number(h.head.identity.number),
        "member_count": len(h.members),
    }


def _household_from_rows(
    row: Mapping[str, Any], causes: Sequence[str], members: Sequence[Member], keyring: Keyring
) -> Household:
    helper = None
    if row["helper_id"]:
        phone = (
            decrypt(keyring, row["helper_phone_cipher"], context=HELPER_PHONE)
            if row["helper_phone_cipher"]
            else None
        )
        helper = Helper(row["helper_id"], row["helper_name"], row["helper_unit"], phone)
    return Household(
        id=row["id"],
        location=Location(
            row["region"],
            row["address"],
            row["street_code"],
            row["street_name"],
            row["community_code"],
            row["community_name"],
        ),
        hukou_type=row["hukou_type"],
        category=Category(row["category"]),
        flags=frozenset(Flag(f) for f in row["flags"]),
        causes=frozenset(Cause(c) for c in causes),
        channel=Channel(row["channel"]),
        submitted_by=row["submitted_by"],
        members=list(members),
        status=Status(row["status"]),
        version=row["version"],
        notice_ends_on=row["notice_ends_on"],
        rejection_reason=row["rejection_reason"],
        exit_kind=ExitKind(row["exit_kind"]) if row["exit_kind"] else None,
        exit_reason=row["exit_reason"],
        enrolled_on=row["enrolled_on"],
        exited_on=row["exited_on"],
        plan=tuple(
            PlanMeasure(PlanGroup(m["group"]), m["measure"], m["lead_department"], m["status"])
            for m in row["plan"]
        ),
        helper=helper,
        last_visit_on=row["last_visit_on"],
    )


def to_cloudevent(
    event: HouseholdEvent, *, region: str, sequence: int, traceparent: str | None = None
) -> CloudEvent:
    """Wrap a domain event in the integrators' envelope, in the trace of `traceparent` (else
    of what is being handled)."""
    data = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(event).items()}
    return new_event(
        service="registry",
        aggregate="household",
        name=event.name,
        subject=event.household_id,
        region=region,
        sequence=sequence,
        data=data,
        traceparent=traceparent,
    )


# -- loading and saving --------------------------------------------------------------------


@dataclass(frozen=True)
class Written:
    """A household as a write left it, with its row and member rows as stored."""

    household: Household
    row: Mapping[str, Any]
    members: Sequence[Mapping[str, Any]]

    def view(self) -> dict[str, Any]:
        """The masked answer to the write, as a read of the file in its transaction gives it,
        without reading the file back (three SELECTs a write fewer)."""
        causes = sorted(c.value for c in self.household.causes)
        return view(self.row, causes=causes, members=self.members, keyring=None)


async def load(uow: UnitOfWork, ctx: Context, household_id: str) -> Household:
    """The aggregate, if it exists and lies inside the caller's regions (404 otherwise)."""
    return (await _load(uow, ctx, household_id)).household


async def _load(uow: UnitOfWork, ctx: Context, household_id: str) -> Written:
    """The aggregate with the rows it was read from."""
    # A unit of one write checks the version it read as it writes, so it may read what is
    # committed: on a SQLite file on the loop's thread, not in a call to the driver's.
    found = await store.get_household_file(uow, household_id, committed=uow.one_write)
    if found is None or not ctx.principal.covers(found[0]["region"]):
        raise HouseholdNotFound(household_id)
    row, causes, member_rows = found
    members = [_member_from_row(m, ctx.keyring, ctx.today) for m in member_rows]
    household = _household_from_rows(row, causes, members, ctx.keyring)
    return Written(household, row, member_rows)


def _check_version(household: Household, if_match: int | None) -> None:
    if if_match is not None and if_match != household.version:
        raise VersionMismatch(household.version)


async def _save(
    uow: UnitOfWork,
    ctx: Context,
    household: Household,
    *,
    expected_version: int,
    causes_before: frozenset[Cause] | None = None,  # given when the causes may have changed
) -> dict[str, Any]:
    """Write the new state, its history and its events in the caller's transaction; the row
    as written."""
    if causes_before is None:
        causes_before = household.causes
    history = _history_rows(household)
    _publish(uow, household)
    saved = await store.update_household(
        uow.session,
        household.id,
        expected_version=expected_version,
        row=_household_row(household, ctx.keyring),
        causes_removed=sorted(c.value for c in causes_before - household.causes),
        causes_added=sorted(c.value for c in household.causes - causes_before),
        history=history,
        events=uow.take_events(),
        one_write=uow.one_write,
    )
    if saved is None:
        current = await store.get_household(uow.session, household.id)
        raise VersionMismatch(current["version"] if current else expected_version)
    return saved


def _history_rows(household: Household) -> list[dict[str, Any]]:
    return [
        {
            "household_id": household.id,
            "version": e.version,
            "actor": e.actor,
            "action": e.action,
            "comment": e.comment,
            "changes": [{"field": c.field, "old": c.old, "new": c.new} for c in e.changes],
        }
        for e in household.history
    ]


def _publish(uow: UnitOfWork, household: Household) -> None:
    """Queue the change's events for the outbox; its history is written with them."""
    # Every event of one change carries the version the change produced.
    uow.publish(
        *(
            to_cloudevent(e, region=household.location.region, sequence=household.version)
            for e in household.events
        )
    )
    household.history.clear()
    household.events.clear()


# -- use cases -----------------------------------------------------------------------------


def new_member(spec: Mapping[str, Any], *, today: date) -> Member:
    """A Member from validated request data; identity facts derive from the number."""
    return Member(
        id=new_event_id(),
        name=spec["name"],
        identity=parse_identity_number(spec["identity_number"], today=today),
        relation=Relation(spec["relation"]),
        hukou_type=HukouType(spec["hukou_type"]),
        labour_capacity=LabourCapacity(spec["labour_capacity"]),
        employment=Employment(spec["employment"]),
        union_member=spec["union_member"],
        labour_contract_months=spec["labour_contract_months"],
        health=Health(**spec["health"]),
        education_stage=EducationStage(spec["education_stage"]),
        boarding=spec["boarding"],
        phone=spec["phone"],
    )


async def apply(
    uow: UnitOfWork,
    ctx: Context,
    *,
    location: Location,
    hukou_type: str,
    category: Category,
    flags: frozenset[Flag],
    causes: frozenset[Cause],
    channel: Channel,
    submitted_by: str | None,
    members: Sequence[Mapping[str, Any]],
) -> Written:
    """File a new household at the applied step (申请)."""
    parse_region(location.region)
    if not ctx.principal.covers(location.region):
        raise RegionNotAllowed(location.region)
    household = Household.apply(
        household_id=new_event_id(),
        location=location,
        hukou_type=hukou_type,
        category=category,
        flags=flags,
        causes=causes,
        channel=channel,
        submitted_by=submitted_by,
        members=[new_member(m, today=ctx.today) for m in members],
        actor=ctx.actor,
        today=ctx.today,
    )
    member_rows = [
        _member_row(m, household_id=household.id, position=i, keyring=ctx.keyring)
        for i, m in enumerate(household.members)
    ]
    row = {"id": household.id, **_household_row(household, ctx.keyring)}
    history = _history_rows(household)
    _publish(uow, household)
    try:
        await store.insert_household(
            uow.session,
            row,
            sorted(c.value for c in causes),
            member_rows,
            history=history,
            events=uow.take_events(),
            one_write=uow.one_write,
        )
    except store.PersonInActiveHousehold as exc:
        masked = {m["identity_index"]: m["identity_masked"] for m in member_rows}
        await _refuse_held(uow, ctx, exc, masked)
    # No other service has attached a result to a file filed just now.
    return Written(household, {**row, **dict.fromkeys(ATTACHED_RESULTS)}, member_rows)


async def _claim(
    uow: UnitOfWork,
    ctx: Context,
    household: Household,
    indexes: Sequence[str],
    masked: Mapping[str, str],
) -> None:
    try:
        await store.claim_persons(uow.session, household.id, indexes)
    except store.PersonInActiveHousehold as exc:
        await _refuse_held(uow, ctx, exc, masked)


async def _refuse_held(
    uow: UnitOfWork, ctx: Context, exc: store.PersonInActiveHousehold, masked: Mapping[str, str]
) -> NoReturn:
    """Raise the error the caller may see for a person another household holds."""
    held = await store.get_members(uow.session, exc.household_id)
    number = next((m["identity_masked"] for m in held if m["identity_index"] in masked), "a member")
    holder = await store.get_household(uow.session, exc.household_id)
    assert holder is not None  # a claim belongs to a filed household
    if ctx.principal.covers(holder["region"]):
        raise PersonAlreadyFiled(exc.household_id, number) from exc
    province = FILING_PROVINCES[parse_region(holder["region"]).province]
    raise PersonFiledElsewhere(province, number) from exc


async def change(
    uow: UnitOfWork, ctx: Context, household_id: str, *, if_match: int, values: dict[str, Any]
) -> Written:
    """Change editable fields; members are not among them, so their rows as read stay true."""
    loaded = await _load(uow, ctx, household_id)
    household = loaded.household
    _check_version(household, if_match)
    if "location" in values:
        region = values["location"].region
        if region != household.location.region and not ctx.principal.covers(region):
            raise RegionNotAllowed(region)
    before, causes_before = household.version, household.causes
    if not household.change(actor=ctx.actor, **values):
        return loaded
    row = await _save(uow, ctx, household, expected_version=before, causes_before=causes_before)
    return Written(household, row, loaded.members)


async def add_member(
    uow: UnitOfWork, ctx: Context, household_id: str, *, if_match: int, spec: Mapping[str, Any]
) -> tuple[Household, Member]:
    household = await load(uow, ctx, household_id)
    _check_version(household, if_match)
    before = household.version
    member = new_member(spec, today=ctx.today)
    household.add_member(member, actor=ctx.actor)
    row = _member_row(
        member, household_id=household.id, position=len(household.members) - 1, keyring=ctx.keyring
    )
    await store.insert_member(uow.session, row)
    await _claim(
        uow,
        ctx,
        household,
        [row["identity_index"]],
        {row["identity_index"]: row["identity_masked"]},
    )
    await _save(uow, ctx, household, expected_version=before)
    return household, member


async def update_member(
    uow: UnitOfWork,
    ctx: Context,
    household_id: str,
    member_id: str,
    *,
    if_match: int,
    values: dict[str, Any],
) -> Household:
    household = await load(uow, ctx, household_id)
    _check_version(household, if_match)
    before = household.version
    if household.update_member(member_id, actor=ctx.actor, **values):
        member = next(m for m in household.members if m.id == member_id)
        row = _member_row(member, household_id=household.id, position=0, keyring=ctx.keyring)
        await store.update_member(
            uow.session,
            member_id,
            {k: v for k, v in row.items() if k not in ("id", "household_id", "position")},
        )
        await _save(uow, ctx, household, expected_version=before)
    return household


async def remove_member(
    uow: UnitOfWork, ctx: Context, household_id: str, member_id: str, *, if_match: int, reason: str
) -> Household:
    household = await load(uow, ctx, household_id)
    _check_version(household, if_match)
    before = household.version
    member = household.remove_member(member_id, actor=ctx.actor, reason=reason)
    await store.delete_member(uow.session, member_id)
    await store.release_persons(
        uow.session,
        household.id,
        [blind_index(ctx.keyring, member.identity.number, purpose=INDEX_PURPOSE)],
    )
    await _save(uow, ctx, household, expected_version=before)
    return household


async def take_step(
    uow: UnitOfWork,
    ctx: Context,
    household_id: str,
    step: Step,
    *,
    if_match: int,
    comment: str | None,
    exit_kind: ExitKind | None,
) -> Household:
    """Move the file one step in the review workflow, with the scope that step needs."""
    household = await load(uow, ctx, household_id)
    _check_version(household, if_match)
    scope = required_scope(step, household.status)
    if scope not in ctx.principal.scopes:
        raise MissingScope(scope)
    before = household.version
    region = household.location.region
    days = next(
        ctx.notice_days[p]
        for p in sorted(ctx.notice_days, key=len, reverse=True)
        if region.startswith(p)
    )
    household.take_step(
        step,
        actor=ctx.actor,
        today=ctx.today,
        comment=comment,
        notice_days=days,
        exit_kind=exit_kind,
    )
    if step is Step.OBJECT:
        await store.insert_objection(
            uow.session, household_id=household.id, text=comment or "", actor=ctx.actor
        )
    if step is Step.START_NOTICE:
        await store.resolve_objections(uow.session, household.id)
    if household.status not in ACTIVE:
        await store.release_persons(uow.session, household.id)
    if step is Step.REAPPLY:
        await _claim(
            uow,
            ctx,
            household,
            [
                blind_index(ctx.keyring, m.identity.number, purpose=INDEX_PURPOSE)
                for m in household.members
            ],
            {},
        )
    await _save(uow, ctx, household, expected_version=before)
    return household


async def set_plan(
    uow: UnitOfWork,
    ctx: Context,
    household_id: str,
    *,
    if_match: int,
    plan: tuple[PlanMeasure, ...],
) -> Household:
    household = await load(uow, ctx, household_id)
    _check_version(household, if_match)
    before = household.version
    household.set_plan(plan, actor=ctx.actor)
    if household.version != before:
        await _save(uow, ctx, household, expected_version=before)
    return household


async def assign_helper(
    uow: UnitOfWork, ctx: Context, household_id: str, *, helper: Helper, reason: str | None
) -> Household:
    household = await load(uow, ctx, household_id)
    before = household.version
    household.assign_helper(helper, actor=ctx.actor, reason=reason)
    await store.start_helper_assignment(
        uow.session,
        {
            "household_id": household.id,
            "helper_id": helper.id,
            "name": helper.name,
            "unit": helper.unit,
            "reason": reason,
        },
    )
    await _save(uow, ctx, household, expected_version=before)
    return household


async def record_visit(
    uow: UnitOfWork,
    ctx: Context,
    household_id: str,
    *,
    visited_on: date,
    findings: str,
    follow_up_needed: bool,
) -> tuple[Household, str]:
    household = await load(uow, ctx, household_id)
    before = household.version
    visit_id = new_event_id()
    household.record_visit(
        visit_id=visit_id,
        visited_on=visited_on,
        today=ctx.today,
        follow_up_needed=follow_up_needed,
        actor=ctx.actor,
    )
    assert household.helper is not None
    await store.insert_visit(
        uow.session,
        {
            "id": visit_id,
            "household_id": household.id,
            "helper_id": household.helper.id,
            "visited_on": visited_on,
            "findings": findings,
            "follow_up_needed": follow_up_needed,
        },
    )
    await _save(uow, ctx, household, expected_version=before)
    return household, visit_id


async def record_income(
    uow: UnitOfWork, ctx: Context, household_id: str, *, month: str, income_fen: int
) -> Household:
    household = await load(uow, ctx, household_id)
    before = household.version
    household.record_income(month=month, income_fen=income_fen, actor=ctx.actor)
    await store.upsert_monthly_income(
        uow.session,
        {
            "household_id": household.id,
            "month": month,
            "income_fen": income_fen,
            "member_count": len(household.members),
        },
    )
    await _save(uow, ctx, household, expected_version=before)
    return household


async def declare(
    uow: UnitOfWork,
    ctx: Context,
    household_id: str,
    *,
    if_match: int,
    items: Sequence[Mapping[str, Any]],
) -> Household:
    """Declared income and assets (a material change: verification re-checks on it)."""
    household = await load(uow, ctx, household_id)
    _check_version(household, if_match)
    before = household.version
    household.declare(items, actor=ctx.actor)
    await store.insert_declarations(
        uow.session, [{"household_id": household.id, **dict(item)} for item in items]
    )
    await _save(uow, ctx, household, expected_version=before)
    return household


# -- reading -------------------------------------------------------------------------------


async def read(
    uow: UnitOfWork, ctx: Context, household_id: str, *, purpose: str | None, now: datetime
) -> dict[str, Any]:
    """The file as the caller may see it; PII in clear only with pii:read, and audited."""
    row = await store.get_household(uow.session, household_id)
    if row is None or not ctx.principal.covers(row["region"]):
        raise HouseholdNotFound(household_id)
    members = await store.get_members(uow.session, household_id)
    causes = await store.get_causes(uow.session, household_id)
    clear = PII_READ in ctx.principal.scopes
    if clear:
        if not purpose:
            raise PurposeRequired()
        await _audit_clear_read(uow, ctx, household_id, purpose=purpose, now=now)
    return view(row, causes=causes, members=members, keyring=ctx.keyring if clear else None)


@dataclass(frozen=True)
class ManyRead:
    """Files as the single read answers each, in the order asked; `not_found` names the ids
    missing or outside the caller's regions alike, as the single read's 404 does."""

    files: list[dict[str, Any]]
    declarations: dict[str, list[dict[str, Any]]] | None
    not_found: list[str]


async def read_many(
    uow: UnitOfWork,
    ctx: Context,
    household_ids: Sequence[str],
    *,
    purpose: str | None,
    with_declarations: bool,
    now: datetime,
) -> ManyRead:
    """Many files in a few queries (a consumer catching up reads hundreds a second); PII in
    clear only with pii:read and a purpose, each household found audited as its single read."""
    clear = PII_READ in ctx.principal.scopes
    if clear and not purpose:
        raise PurposeRequired()
    wanted = list(dict.fromkeys(household_ids))
    rows = {
        row["id"]: row
        for row in await store.get_households(uow.session, wanted)
        if ctx.principal.covers(row["region"])
    }
    found = [household_id for household_id in wanted if household_id in rows]
    members = await store.get_members_of(uow.session, found) if found else {}
    causes = await store.get_causes_of(uow.session, found) if found else {}
    declarations = None
    if with_declarations:
        held = await store.get_declarations_of(uow.session, found) if found else {}
        declarations = {household_id: held.get(household_id, []) for household_id in found}
    if clear:
        assert purpose is not None
        await audit.append_many(
            uow.session,
            targets=found,
            now=now,
            **_clear_read_record(ctx, purpose),
        )
    files = [
        view(
            rows[household_id],
            causes=causes.get(household_id, []),
            members=members.get(household_id, []),
            keyring=ctx.keyring if clear else None,
        )
        for household_id in found
    ]
    not_found = [household_id for household_id in wanted if household_id not in rows]
    return ManyRead(files=files, declarations=declarations, not_found=not_found)


async def _audit_clear_read(
    uow: UnitOfWork, ctx: Context, household_id: str, *, purpose: str, now: datetime
) -> None:
    await audit.append(
        uow.session, target=household_id, now=now, **_clear_read_record(ctx, purpose)
    )


def _clear_read_record(ctx: Context, purpose: str) -> dict[str, Any]:
    """The audit record of a clear read of a household's file, but its target and time."""
    return {
        "client_id": ctx.actor,
        "action": "household.pii_read",
        "outcome": "success",
        "purpose": purpose,
        "trace_id": trace_id_of(current_traceparent()),
        "detail": {"fields": ["members.identity_number", "members.birth_date", "members.phone"]},
        "profile": ctx.keyring.profile,
    }


def view(
    row: Mapping[str, Any],
    *,
    causes: Sequence[str],
    members: Sequence[Mapping[str, Any]],
    keyring: Keyring | None,
) -> dict[str, Any]:
    """The response body; `keyring` given means PII in clear."""

    def person(m: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "id": m["id"],
            "name": m["name"],
            "relation": m["relation"],
            "identity_number": decrypt(keyring, m["identity_cipher"], context=IDENTITY)
            if keyring
            else m["identity_masked"],
            # The birth date is the number's middle: in clear only with the number itself.
            "birth_date": m["birth_date"] if keyring else None,
            "birth_year": m["birth_date"].year,
            "sex": m["sex"],
            "hukou_type": m["hukou_type"],
            "labour_capacity": m["labour_capacity"],
            "employment": m["employment"],
            "union_member": m["union_member"],
            "labour_contract_months": m["labour_contract_months"],
            "health": {
                "major_illness": m["major_illness"],
                "chronic_illness": m["chronic_illness"],
                "disability_grade": m["disability_grade"],
            },
            "education_stage": m["education_stage"],
            "boarding": m["boarding"],
            "phone": (
                decrypt(keyring, m["phone_cipher"], context=PHONE)
                if keyring and m["phone_cipher"]
                else m["phone_masked"]
            ),
        }

    return {
        "id": row["id"],
        "version": row["version"],
        "status": row["status"],
        "allowed_steps": [
            s.value for s in allowed_steps(Status(row["status"]), Channel(row["channel"]))
        ],
        "location": {
            k: row[k]
            for k in (
                "region",
                "street_code",
                "street_name",
                "community_code",
                "community_name",
                "address",
            )
        },
        "hukou_type": row["hukou_type"],
        "category": row["category"],
        "flags": row["flags"],
        "causes": list(causes),
        "channel": row["channel"],
        "submitted_by": row["submitted_by"],
        "members": [person(m) for m in members],
        "plan": row["plan"],
        "helper": {
            "id": row["helper_id"],
            "name": row["helper_name"],
            "unit": row["helper_unit"],
            "phone": row["helper_phone_masked"],
        }
        if row["helper_id"]
        else None,
        "notice_ends_on": row["notice_ends_on"],
        "rejection_reason": row["rejection_reason"],
        "enrolled_on": row["enrolled_on"],
        "exit": {"kind": row["exit_kind"], "reason": row["exit_reason"], "on": row["exited_on"]}
        if row["exit_kind"]
        else None,
        "last_visit_on": row["last_visit_on"],
        "verification": row["verification"],
        "entitlements": row["entitlements"],
        "exit_eligibility": row["exit_eligibility"],
    }


def summary(row: Mapping[str, Any]) -> dict[str, Any]:
    """A list entry: masked head, no member details."""
    return {
        "id": row["id"],
        "version": row["version"],
        "status": row["status"],
        "region": row["region"],
        "category": row["category"],
        "head_name": mask_name(row["head_name"]),
        "head_identity_number": row["head_identity_masked"],
        "member_count": row["member_count"],
        "helper_id": row["helper_id"],
        "enrolled_on": row["enrolled_on"],
        "last_visit_on": row["last_visit_on"],
        "notice_ends_on": row["notice_ends_on"],
        # 脱困提示: when benefits flagged the income as above the line, if it did.
        "exit_flagged_at": (row["exit_eligibility"] or {}).get("flagged_at"),
    }


# -- results from other services -------------------------------------------------------------


@dataclass(frozen=True)
class Attachment:
    """Another service's result for a file (`attach`): the column it lands in, its value, the
    service it came from, and the trace of the event that brought it."""

    household_id: str
    field_name: str
    value: Any
    source: str
    traceparent: str | None = None


async def attach(uow: UnitOfWork, attachments: Sequence[Attachment]) -> set[str]:
    """Attach other services' results (a report summary, a measures card) to their files, in
    their order: a file given two values of one field keeps the last. Each attachment writes
    its history row and a `household.changed` event.

    The file's version (its ETag) is left as it is: it guards what people edit, and a result
    landing from another service is no one's edit, so a reviewer's If-Match read before it
    still holds (no 412 for a conflict nobody made). People's writes never carry these fields,
    so neither overwrites the other.

    Returns the households held here; an attachment to any other is ignored.
    """
    values: dict[str, dict[str, Any]] = {}
    for a in attachments:
        values.setdefault(a.field_name, {})[a.household_id] = a.value
    held: dict[tuple[str, str], dict[str, Any]] = {}
    for field_name, by_household in values.items():
        found = await store.attach_results(uow.session, field_name, by_household)
        held |= {(field_name, h): row for h, row in found.items()}
    done = [
        (a, held[a.field_name, a.household_id])
        for a in attachments
        if (a.field_name, a.household_id) in held
    ]
    await store.add_history(
        uow.session,
        [
            {
                "household_id": a.household_id,
                "version": row["version"],
                "actor": a.source,
                "action": f"{a.field_name}_attached",
                "comment": None,
                "changes": [{"field": a.field_name, "old": None, "new": "attached"}],
            }
            for a, row in done
        ],
    )
    for a, row in done:
        uow.publish(
            to_cloudevent(
                HouseholdChanged(a.household_id, (a.field_name,)),
                region=row["region"],
                sequence=row["version"],
                traceparent=a.traceparent,
            )
        )
    return {a.household_id for a, _ in done}
