"""Events the registry publishes: `cn.bangfu.registry.household.<name>.v1`, no plaintext PII."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class HouseholdEvent:
    """Base of household events: `name` is the event's token in its type and subject."""

    name: ClassVar[str]
    household_id: str


@dataclass(frozen=True)
class HouseholdApplied(HouseholdEvent):
    """申请: a file was opened, or re-opened after a rejection."""

    name: ClassVar[str] = "applied"
    category: str
    channel: str
    member_count: int
    head_name_masked: str
    head_identity_masked: str
    applied_on: str


@dataclass(frozen=True)
class HouseholdReviewed(HouseholdEvent):
    """初审 by the community or 复核 by the street."""

    name: ClassVar[str] = "reviewed"
    level: str  # "community" or "street"
    actor: str


@dataclass(frozen=True)
class HouseholdApproved(HouseholdEvent):
    """审核 by the county office."""

    name: ClassVar[str] = "approved"
    actor: str


@dataclass(frozen=True)
class HouseholdNoticed(HouseholdEvent):
    """公示 started: the list is public until `notice_ends_on`."""

    name: ClassVar[str] = "noticed"
    notice_starts_on: str
    notice_ends_on: str


@dataclass(frozen=True)
class HouseholdObjected(HouseholdEvent):
    """An objection during 公示 sent the file back to county review."""

    name: ClassVar[str] = "objected"
    objection: str


@dataclass(frozen=True)
class HouseholdEnrolled(HouseholdEvent):
    """Enrolled: one file per household (一户一档) is open."""

    name: ClassVar[str] = "enrolled"
    enrolled_on: str
    category: str


@dataclass(frozen=True)
class HouseholdRejected(HouseholdEvent):
    name: ClassVar[str] = "rejected"
    at_status: str
    reason: str


@dataclass(frozen=True)
class HouseholdChanged(HouseholdEvent):
    """Fields of the file changed; `fields` names them (values are fetched over REST)."""

    name: ClassVar[str] = "changed"
    fields: tuple[str, ...]


@dataclass(frozen=True)
class MemberAdded(HouseholdEvent):
    name: ClassVar[str] = "member_added"
    member_id: str
    relation: str


@dataclass(frozen=True)
class MemberRemoved(HouseholdEvent):
    name: ClassVar[str] = "member_removed"
    member_id: str


@dataclass(frozen=True)
class HelperAssigned(HouseholdEvent):
    """A 帮扶责任人 was named (or replaced) for the household."""

    name: ClassVar[str] = "helper_assigned"
    helper_id: str
    helper_name_masked: str
    unit: str


@dataclass(frozen=True)
class VisitRecorded(HouseholdEvent):
    name: ClassVar[str] = "visit_recorded"
    visit_id: str
    visited_on: str
    helper_id: str
    follow_up_needed: bool


@dataclass(frozen=True)
class IncomeRecorded(HouseholdEvent):
    """A month's household income after enrolment (benefits evaluates 脱困 from these)."""

    name: ClassVar[str] = "income_recorded"
    month: str
    income_fen: int
    member_count: int


@dataclass(frozen=True)
class HouseholdExited(HouseholdEvent):
    """脱困, 解困 or 退出."""

    name: ClassVar[str] = "exited"
    kind: str
    reason: str
    exited_on: str


EVENT_TYPES: tuple[type[HouseholdEvent], ...] = (
    HouseholdApplied,
    HouseholdReviewed,
    HouseholdApproved,
    HouseholdNoticed,
    HouseholdObjected,
    HouseholdEnrolled,
    HouseholdRejected,
    HouseholdChanged,
    MemberAdded,
    MemberRemoved,
    HelperAssigned,
    VisitRecorded,
    IncomeRecorded,
    HouseholdExited,
)
