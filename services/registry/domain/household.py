"""The household file (一户一档): the aggregate every change goes through.

Each method checks its rule, bumps the version, and records what happened twice: as an event
for the outbox and as a history entry (who, what, old → new) for the file itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from enum import StrEnum
from typing import Any

from services.registry.domain import events as ev
from services.registry.domain.members import Member, Relation, mask_name
from services.registry.domain.workflow import (
    ACTIVE,
    Channel,
    ExitKind,
    Status,
    Step,
    StepNotAllowed,
    allowed_steps,
    next_status,
)
from shared.identity import mask_identity_number, mask_phone


class Category(StrEnum):
    """The primary category (Fengqiu §三, Nanyang §三)."""

    TEKUN = "tekun"  # 城镇特困供养
    DIBAO = "dibao"  # 低保
    DIBAO_EDGE = "dibao_edge"  # 低保边缘
    EXPENDITURE = "expenditure"  # 支出型 / 意外灾害
    MIGRANT_WORKER = "migrant_worker"  # 农民工
    LAYOFF = "layoff"  # 供给侧结构性改革下岗


class Cause(StrEnum):
    """Causes of hardship (致困原因); several may apply."""

    ILLNESS = "illness"  # 因病
    DISABILITY = "disability"  # 因残
    EDUCATION = "education"  # 因学
    DISASTER = "disaster"  # 因灾/意外
    UNEMPLOYMENT = "unemployment"  # 失业/下岗
    UNPAID_SOCIAL_INSURANCE = "unpaid_social_insurance"  # 企业欠缴社保
    LACK_OF_LABOUR = "lack_of_labour"  # 缺乏劳动力
    OTHER = "other"


class Flag(StrEnum):
    ZERO_EMPLOYMENT = "zero_employment"  # 零就业家庭
    RURAL_POVERTY_ROSTER = "rural_poverty_roster"  # 农村建档立卡 (bars the migrant-worker group)
    SINGLE_PARENT = "single_parent"
    ELDERLY_ALONE = "elderly_alone"


class PlanGroup(StrEnum):
    """The groups of measures in a help plan (一户一计划)."""

    EMPLOYMENT = "employment"  # 就业创业
    SOCIAL_INSURANCE = "social_insurance"  # 社会保险
    MEDICAL = "medical"  # 医疗保障
    BASIC_LIVING = "basic_living"  # 兜底保障
    EDUCATION = "education"  # 子女助学
    UNION = "union"  # 工会帮扶
    HOUSING = "housing"  # 住房 (两有四保障)


class RuleBroken(ValueError):
    """A change the file's rules do not allow (not a workflow step: see StepNotAllowed)."""

    def __init__(self, field_name: str, reason: str):
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.reason = reason


_STREET = re.compile(r"^\d{9}$")
_COMMUNITY = re.compile(r"^\d{12}$")


@dataclass(frozen=True)
class Location:
    """County region, street (9-digit code) and community (12-digit code), and the address."""

    region: str
    address: str
    street_code: str | None = None
    street_name: str | None = None
    community_code: str | None = None
    community_name: str | None = None

    def __post_init__(self) -> None:
        if self.street_code is not None and not (
            _STREET.match(self.street_code) and self.street_code.startswith(self.region)
        ):
            raise RuleBroken("street_code", f"must be 9 digits starting with {self.region}")
        if self.community_code is not None and not (
            _COMMUNITY.match(self.community_code)
            and self.street_code
            and self.community_code.startswith(self.street_code)
        ):
            raise RuleBroken("community_code", "must be 12 digits starting with the street code")


@dataclass(frozen=True)
class PlanMeasure:
    group: PlanGroup
    measure: str
    lead_department: str  # 牵头单位
    status: str = "planned"


@dataclass(frozen=True)
class Helper:
    """帮扶责任人 — the person assigned to visit a household at least once a month."""

    id: str
    name: str
    unit: str
    phone: str | None = None


@dataclass(frozen=True)
class FieldChange:
    field: str
    old: Any
    new: Any


@dataclass(frozen=True)
class HistoryEntry:
    """One line of the file's history; PII in `changes` is already masked."""

    version: int
    actor: str
    action: str
    changes: tuple[FieldChange, ...] = ()
    comment: str | None = None


# Fields a PATCH may change; everything else changes through steps or sub-resources.
EDITABLE = ("location", "hukou_type", "category", "flags", "causes")
MEMBER_EDITABLE = (
    "name",
    "relation",
    "hukou_type",
    "labour_capacity",
    "employment",
    "union_member",
    "labour_contract_months",
    "health",
    "education_stage",
    "boarding",
    "phone",
)


@dataclass
class Household:
    id: str
    location: Location
    hukou_type: str
    category: Category
    flags: frozenset[Flag]
    causes: frozenset[Cause]
    channel: Channel
    submitted_by: str | None
    members: list[Member]
    status: Status = Status.APPLIED
    version: int = 1
    notice_ends_on: date | None = None
    rejection_reason: str | None = None
    exit_kind: ExitKind | None = None
    exit_reason: str | None = None
    enrolled_on: date | None = None
    exited_on: date | None = None
    plan: tuple[PlanMeasure, ...] = ()
    helper: Helper | None = None
    last_visit_on: date | None = None
    events: list[ev.HouseholdEvent] = field(default_factory=list, repr=False)
    history: list[HistoryEntry] = field(default_factory=list, repr=False)

    # -- intake -----------------------------------------------------------------------------

    @classmethod
    def apply(
        cls,
        *,
        household_id: str,
        location: Location,
        hukou_type: str,
        category: Category,
        flags: frozenset[Flag],
        causes: frozenset[Cause],
        channel: Channel,
        submitted_by: str | None,
        members: list[Member],
        actor: str,
        today: date,
    ) -> Household:
        """Open a file at the applied step (申请)."""
        heads = [m for m in members if m.relation is Relation.HEAD]
        if len(heads) != 1:
            raise RuleBroken("members", "exactly one member must be the head (户主)")
        numbers = [m.identity.number for m in members]
        if len(set(numbers)) != len(numbers):
            raise RuleBroken("members", "the same identity number appears twice")
        if channel is not Channel.PLACE and not submitted_by:
            raise RuleBroken("submitted_by", f"the {channel.value} channel names its submitter")
        if not causes:
            raise RuleBroken("causes", "at least one cause of hardship is needed")
        household = cls(
            id=household_id,
            location=location,
            hukou_type=hukou_type,
            category=category,
            flags=flags,
            causes=causes,
            channel=channel,
            submitted_by=submitted_by,
            members=list(members),
        )
        household.events.append(household._applied_event(today))
        household.history.append(HistoryEntry(household.version, actor, "apply"))
        return household

    @property
    def head(self) -> Member:
        return next(m for m in self.members if m.relation is Relation.HEAD)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def _applied_event(self, today: date) -> ev.HouseholdApplied:
        return ev.HouseholdApplied(
            household_id=self.id,
            category=self.category.value,
            channel=self.channel.value,
            member_count=len(self.members),
            head_name_masked=mask_name(self.head.name),
            head_identity_masked=mask_identity_number(self.head.identity.number),
            applied_on=today.isoformat(),
        )

    # -- changes ----------------------------------------------------------------------------

    def _bump(self) -> None:
        self.version += 1

    def _require_active(self, what: str) -> None:
        if not self.active:
            raise RuleBroken(what, f"the file is {self.status.value}; it can no longer change")

    def change(self, *, actor: str, **values: Any) -> tuple[FieldChange, ...]:
        """Change editable fields (continuous updating, Qinhuangdao §三(一))."""
        unknown = sorted(set(values) - set(EDITABLE))
        if unknown:
            raise RuleBroken(unknown[0], "is not editable; statuses change through workflow steps")
        self._require_active("household")
        if "causes" in values and not values["causes"]:
            raise RuleBroken("causes", "at least one cause of hardship is needed")
        changes = tuple(
            FieldChange(name, _plain(getattr(self, name)), _plain(value))
            for name, value in values.items()
            if getattr(self, name) != value
        )
        if not changes:
            return ()
        for name, value in values.items():
            setattr(self, name, value)
        self._bump()
        self.events.append(ev.HouseholdChanged(self.id, tuple(c.field for c in changes)))
        self.history.append(HistoryEntry(self.version, actor, "change", changes))
        return changes

    def add_member(self, member: Member, *, actor: str) -> None:
        self._require_active("members")
        if member.relation is Relation.HEAD:
            raise RuleBroken("relation", "the household already has a head")
        if any(m.identity.number == member.identity.number for m in self.members):
            raise RuleBroken("identity_number", "this person is already a member")
        self.members.append(member)
        self._bump()
        self.events.append(ev.MemberAdded(self.id, member.id, member.relation.value))
        self.history.append(
            HistoryEntry(
                self.version,
                actor,
                "member_added",
                (
                    FieldChange(
                        "members",
                        None,
                        f"{mask_name(member.name)} {mask_identity_number(member.identity.number)}",
                    ),
                ),
            )
        )

    def update_member(self, member_id: str, *, actor: str, **values: Any) -> tuple[str, ...]:
        """Change a member's circumstances (employment, health, schooling…); returns fields."""
        self._require_active("members")
        unknown = sorted(set(values) - set(MEMBER_EDITABLE))
        if unknown:
            raise RuleBroken(unknown[0], "is not editable; identity facts come from the number")
        index, member = next(
            ((i, m) for i, m in enumerate(self.members) if m.id == member_id), (None, None)
        )
        if member is None or index is None:
            raise RuleBroken("member_id", f"no member {member_id} in this household")
        if "relation" in values and Relation.HEAD in (member.relation, values["relation"]):
            raise RuleBroken("relation", "the head is changed by filing a new household")
        changed = {k: v for k, v in values.items() if getattr(member, k) != v}
        if not changed:
            return ()
        label = f"members[{mask_name(member.name)}]"
        changes = tuple(
            FieldChange(f"{label}.{k}", _history_value(k, getattr(member, k)), _history_value(k, v))
            for k, v in changed.items()
        )
        self.members[index] = replace(member, **changed)
        self._bump()
        fields = tuple(f"members.{k}" for k in changed)
        self.events.append(ev.HouseholdChanged(self.id, fields))
        self.history.append(HistoryEntry(self.version, actor, "member_changed", changes))
        return fields

    def remove_member(self, member_id: str, *, actor: str, reason: str) -> Member:
        self._require_active("members")
        member = next((m for m in self.members if m.id == member_id), None)
        if member is None:
            raise RuleBroken("member_id", f"no member {member_id} in this household")
        if member.relation is Relation.HEAD:
            raise RuleBroken("member_id", "the head cannot be removed; name a new head first")
        self.members.remove(member)
        self._bump()
        self.events.append(ev.MemberRemoved(self.id, member_id))
        self.history.append(
            HistoryEntry(
                self.version,
                actor,
                "member_removed",
                (
                    FieldChange(
                        "members",
                        f"{mask_name(member.name)} {mask_identity_number(member.identity.number)}",
                        None,
                    ),
                ),
                reason,
            )
        )
        return member

    def set_plan(self, plan: tuple[PlanMeasure, ...], *, actor: str) -> None:
        """Agree the help plan (一户一计划); each measure names its lead department."""
        self._require_active("plan")
        if plan == self.plan:
            return
        change = FieldChange("plan", [_plain(m) for m in self.plan], [_plain(m) for m in plan])
        self.plan = plan
        self._bump()
        self.events.append(ev.HouseholdChanged(self.id, ("plan",)))
        self.history.append(HistoryEntry(self.version, actor, "change", (change,)))

    def assign_helper(self, helper: Helper, *, actor: str, reason: str | None) -> None:
        """Name the 帮扶责任人; a transferred helper is replaced (Nanyang §五(四))."""
        self._require_active("helper")
        previous = self.helper
        self.helper = helper
        self._bump()
        self.events.append(
            ev.HelperAssigned(self.id, helper.id, mask_name(helper.name), helper.unit)
        )
        self.history.append(
            HistoryEntry(
                self.version,
                actor,
                "helper_assigned",
                (
                    FieldChange(
                        "helper",
                        f"{mask_name(previous.name)} ({previous.unit})" if previous else None,
                        f"{mask_name(helper.name)} ({helper.unit})",
                    ),
                ),
                reason,
            )
        )

    def record_visit(
        self, *, visit_id: str, visited_on: date, today: date, follow_up_needed: bool, actor: str
    ) -> None:
        """A home visit by the assigned helper (at least one a month)."""
        self._require_active("visit")
        if self.helper is None:
            raise RuleBroken("helper", "assign a helper before recording visits")
        if visited_on > today:
            raise RuleBroken("visited_on", "a visit cannot be in the future")
        self.last_visit_on = max(visited_on, self.last_visit_on or visited_on)
        self._bump()
        self.events.append(
            ev.VisitRecorded(
                self.id, visit_id, visited_on.isoformat(), self.helper.id, follow_up_needed
            )
        )
        self.history.append(HistoryEntry(self.version, actor, "visit_recorded"))

    def declare(self, items: Sequence[Mapping[str, Any]], *, actor: str) -> None:
        """Declared monthly income or assets of members (a material change)."""
        self._require_active("declarations")
        member_ids = {m.id for m in self.members}
        for i, item in enumerate(items):
            if item["member_id"] not in member_ids:
                raise RuleBroken(f"items[{i}].member_id", "is not a member of this household")
            if item["amount_fen"] < 0:
                raise RuleBroken(f"items[{i}].amount_fen", "must not be negative")
        self._bump()
        self.events.append(ev.HouseholdChanged(self.id, ("declarations",)))
        self.history.append(
            HistoryEntry(
                self.version,
                actor,
                "declared",
                tuple(
                    FieldChange(f"{item['kind']}.{item['item']}", None, item["amount_fen"])
                    for item in items
                ),
            )
        )

    def record_income(self, *, month: str, income_fen: int, actor: str) -> None:
        """A month's household income after enrolment."""
        if self.status is not Status.ENROLLED:
            raise RuleBroken("status", "monthly incomes are recorded for enrolled households")
        if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", month):
            raise RuleBroken("month", "must be YYYY-MM")
        if income_fen < 0:
            raise RuleBroken("income_fen", "must not be negative")
        self._bump()
        self.events.append(ev.IncomeRecorded(self.id, month, income_fen, len(self.members)))
        self.history.append(
            HistoryEntry(
                self.version,
                actor,
                "income_recorded",
                (FieldChange(f"income[{month}]", None, income_fen),),
            )
        )

    # -- the workflow -----------------------------------------------------------------------

    def allowed_steps(self) -> list[Step]:
        return allowed_steps(self.status, self.channel)

    def take_step(
        self,
        step: Step,
        *,
        actor: str,
        today: date,
        comment: str | None = None,
        notice_days: int = 7,
        exit_kind: ExitKind | None = None,
    ) -> None:
        """Move the file one step; the comment is the reason for reject, object and exit."""
        before = self.status
        target = next_status(step, before, self.channel)
        if step in (Step.REJECT, Step.OBJECT, Step.EXIT) and not (comment and comment.strip()):
            raise RuleBroken("comment", f"{step.value} needs a reason")
        if step is Step.STREET_REVIEW and not self.plan:
            raise RuleBroken("plan", "the street review comes with a draft help plan")
        if step is Step.ENROLL and self.notice_ends_on and today < self.notice_ends_on:
            raise StepNotAllowed(
                step, before, [s for s in self.allowed_steps() if s is not Step.ENROLL]
            )
        if step is Step.EXIT and exit_kind is None:
            raise RuleBroken("exit_kind", "say whether the household left as 脱困, 解困 or 退出")
        self.status = target
        self._bump()
        self.events.append(
            self._step_event(
                step,
                actor=actor,
                today=today,
                comment=comment or "",
                before=before,
                notice_days=notice_days,
                exit_kind=exit_kind,
            )
        )
        self.history.append(
            HistoryEntry(
                self.version,
                actor,
                f"step:{step.value}",
                (FieldChange("status", before.value, target.value),),
                comment,
            )
        )

    def _step_event(
        self,
        step: Step,
        *,
        actor: str,
        today: date,
        comment: str,
        before: Status,
        notice_days: int,
        exit_kind: ExitKind | None,
    ) -> ev.HouseholdEvent:
        match step:
            case Step.COMMUNITY_REVIEW | Step.STREET_REVIEW:
                level = "community" if step is Step.COMMUNITY_REVIEW else "street"
                return ev.HouseholdReviewed(self.id, level, actor)
            case Step.COUNTY_APPROVE:
                return ev.HouseholdApproved(self.id, actor)
            case Step.START_NOTICE:
                self.notice_ends_on = today + timedelta(days=notice_days)
                return ev.HouseholdNoticed(
                    self.id, today.isoformat(), self.notice_ends_on.isoformat()
                )
            case Step.OBJECT:
                self.notice_ends_on = None
                return ev.HouseholdObjected(self.id, comment)
            case Step.ENROLL:
                self.enrolled_on = today
                return ev.HouseholdEnrolled(self.id, today.isoformat(), self.category.value)
            case Step.REJECT:
                self.rejection_reason = comment
                return ev.HouseholdRejected(self.id, before.value, comment)
            case Step.EXIT:
                assert exit_kind is not None
                self.exit_kind, self.exit_reason, self.exited_on = exit_kind, comment, today
                return ev.HouseholdExited(self.id, exit_kind.value, comment, today.isoformat())
            case Step.REAPPLY:
                self.rejection_reason = None
                return self._applied_event(today)
        raise AssertionError(step)


def _history_value(field_name: str, value: Any) -> Any:
    """A member field as the history keeps it: names and phones masked."""
    if field_name == "phone":
        return mask_phone(value) if value else None
    if field_name == "name":
        return mask_name(value)
    return _plain(value)


def _plain(value: Any) -> Any:
    """A JSON-friendly form of a field's value for the history."""
    if isinstance(value, frozenset):
        return sorted(str(v) for v in value)
    if isinstance(value, StrEnum):
        return value.value
    if hasattr(value, "__dataclass_fields__"):
        return {k: _plain(v) for k, v in vars(value).items()}
    return value
