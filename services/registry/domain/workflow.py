"""The review workflow (Nanyang §四(二)): 初审 → 复核 → 审核 → 公示 → enrolled.

A pure state machine: which step is allowed from which status, through which intake channel,
and which scope the caller needs for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    """Where a household's file stands."""

    APPLIED = "applied"
    COMMUNITY_REVIEWED = "community_reviewed"
    STREET_REVIEWED = "street_reviewed"
    COUNTY_APPROVED = "county_approved"
    PUBLICLY_NOTICED = "publicly_noticed"
    ENROLLED = "enrolled"
    REJECTED = "rejected"
    EXITED = "exited"


ACTIVE = frozenset(Status) - {Status.REJECTED, Status.EXITED}


class Channel(StrEnum):
    """How the application came in (Nanyang §四(二)1–3)."""

    PLACE = "place"  # 按属地: community → street → county
    EMPLOYER = "employer"  # 按单位: the employer department reviews its own workers
    SECTOR = "sector"  # 按行业: 民政, 残联, 工会 certify under their own rules


class Step(StrEnum):
    COMMUNITY_REVIEW = "community_review"
    STREET_REVIEW = "street_review"
    COUNTY_APPROVE = "county_approve"
    START_NOTICE = "start_notice"
    OBJECT = "object"
    ENROLL = "enroll"
    REJECT = "reject"
    REAPPLY = "reapply"
    EXIT = "exit"


class ExitKind(StrEnum):
    """脱困 (income above the standard, causes removed), 解困, or 退出 for other reasons."""

    TUOKUN = "tuokun"
    JIEKUN = "jiekun"
    TUICHU = "tuichu"


@dataclass(frozen=True)
class Transition:
    step: Step
    source: frozenset[Status]
    target: Status
    scope: str


_REVIEW_STAGES = frozenset(
    {
        Status.APPLIED,
        Status.COMMUNITY_REVIEWED,
        Status.STREET_REVIEWED,
        Status.COUNTY_APPROVED,
        Status.PUBLICLY_NOTICED,
    }
)

TRANSITIONS = {
    t.step: t
    for t in (
        Transition(
            Step.COMMUNITY_REVIEW,
            frozenset({Status.APPLIED}),
            Status.COMMUNITY_REVIEWED,
            "review:community",
        ),
        Transition(
            Step.STREET_REVIEW,
            frozenset({Status.COMMUNITY_REVIEWED}),
            Status.STREET_REVIEWED,
            "review:street",
        ),
        Transition(
            Step.COUNTY_APPROVE,
            frozenset({Status.STREET_REVIEWED}),
            Status.COUNTY_APPROVED,
            "review:county",
        ),
        Transition(
            Step.START_NOTICE,
            frozenset({Status.COUNTY_APPROVED}),
            Status.PUBLICLY_NOTICED,
            "review:county",
        ),
        # An objection during 公示 sends the file back to county review.
        Transition(
            Step.OBJECT,
            frozenset({Status.PUBLICLY_NOTICED}),
            Status.COUNTY_APPROVED,
            "registry:write",
        ),
        Transition(
            Step.ENROLL, frozenset({Status.PUBLICLY_NOTICED}), Status.ENROLLED, "review:county"
        ),
        Transition(Step.REJECT, _REVIEW_STAGES, Status.REJECTED, "review:community"),
        Transition(Step.REAPPLY, frozenset({Status.REJECTED}), Status.APPLIED, "registry:write"),
        Transition(Step.EXIT, frozenset({Status.ENROLLED}), Status.EXITED, "review:county"),
    )
}

# Who may reject depends on the stage reached: the reviewer of that stage or above.
_REJECT_SCOPE = {
    Status.APPLIED: "review:community",
    Status.COMMUNITY_REVIEWED: "review:street",
    Status.STREET_REVIEWED: "review:county",
    Status.COUNTY_APPROVED: "review:county",
    Status.PUBLICLY_NOTICED: "review:county",
}


class StepNotAllowed(Exception):
    """The step cannot be taken from the file's current status."""

    def __init__(self, step: Step, status: Status, allowed: list[Step]):
        super().__init__(f"step {step.value} is not allowed from status {status.value}")
        self.step = step
        self.status = status
        self.allowed = allowed


def source_statuses(step: Step, channel: Channel) -> frozenset[Status]:
    """The statuses a step may start from; employer and sector files enter at county review."""
    transition = TRANSITIONS[step]
    if step is Step.COUNTY_APPROVE and channel is not Channel.PLACE:
        return frozenset({Status.APPLIED})
    if channel is not Channel.PLACE and step in (Step.COMMUNITY_REVIEW, Step.STREET_REVIEW):
        return frozenset()
    return transition.source


def allowed_steps(status: Status, channel: Channel) -> list[Step]:
    """The steps that may be taken now, in workflow order."""
    return [step for step in Step if status in source_statuses(step, channel)]


def required_scope(step: Step, status: Status) -> str:
    """The scope a caller needs to take `step` from `status`."""
    if step is Step.REJECT:
        return _REJECT_SCOPE.get(status, "review:county")
    return TRANSITIONS[step].scope


def next_status(step: Step, status: Status, channel: Channel) -> Status:
    """The status after `step`, or StepNotAllowed naming the steps that are allowed."""
    if status not in source_statuses(step, channel):
        raise StepNotAllowed(step, status, allowed_steps(status, channel))
    return TRANSITIONS[step].target
