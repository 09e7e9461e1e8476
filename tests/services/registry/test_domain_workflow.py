"""The review workflow (Nanyang §四(二)) as a pure state machine: no database, no server."""

from __future__ import annotations

import pytest

from services.registry.domain.workflow import (
    Channel,
    Status,
    Step,
    StepNotAllowed,
    allowed_steps,
    next_status,
    required_scope,
)

S = Status
P = Step

# What each channel may do from each status, in workflow order.
_PLACE = {
    S.APPLIED: [P.COMMUNITY_REVIEW, P.REJECT],
    S.COMMUNITY_REVIEWED: [P.STREET_REVIEW, P.REJECT],
    S.STREET_REVIEWED: [P.COUNTY_APPROVE, P.REJECT],
    S.COUNTY_APPROVED: [P.START_NOTICE, P.REJECT],
    S.PUBLICLY_NOTICED: [P.OBJECT, P.ENROLL, P.REJECT],
    S.ENROLLED: [P.EXIT],
    S.REJECTED: [P.REAPPLY],
    S.EXITED: [],
}
_DIRECT = {
    S.APPLIED: [P.COUNTY_APPROVE, P.REJECT],
    S.COUNTY_APPROVED: [P.START_NOTICE, P.REJECT],
    S.PUBLICLY_NOTICED: [P.OBJECT, P.ENROLL, P.REJECT],
    S.ENROLLED: [P.EXIT],
    S.REJECTED: [P.REAPPLY],
    S.EXITED: [],
}
ALLOWED = [
    *((Channel.PLACE, status, steps) for status, steps in _PLACE.items()),
    *((Channel.EMPLOYER, status, steps) for status, steps in _DIRECT.items()),
    *((Channel.SECTOR, status, steps) for status, steps in _DIRECT.items()),
]


class TestNextStatus:
    def test_a_file_by_place_passes_every_stage_from_application_to_exit(self) -> None:
        status = S.APPLIED
        path = []
        for step in (
            P.COMMUNITY_REVIEW,
            P.STREET_REVIEW,
            P.COUNTY_APPROVE,
            P.START_NOTICE,
            P.ENROLL,
            P.EXIT,
        ):
            status = next_status(step, status, Channel.PLACE)
            path.append(status)
        assert path == [
            S.COMMUNITY_REVIEWED,
            S.STREET_REVIEWED,
            S.COUNTY_APPROVED,
            S.PUBLICLY_NOTICED,
            S.ENROLLED,
            S.EXITED,
        ]

    @pytest.mark.parametrize("channel", [Channel.EMPLOYER, Channel.SECTOR])
    def test_employer_and_sector_files_go_straight_from_application_to_county_approval(
        self, channel: Channel
    ) -> None:
        status = next_status(P.COUNTY_APPROVE, S.APPLIED, channel)
        assert status is S.COUNTY_APPROVED
        status = next_status(P.START_NOTICE, status, channel)
        status = next_status(P.ENROLL, status, channel)
        assert next_status(P.EXIT, status, channel) is S.EXITED

    @pytest.mark.parametrize("channel", [Channel.EMPLOYER, Channel.SECTOR])
    @pytest.mark.parametrize(
        ("step", "status"),
        [(P.COMMUNITY_REVIEW, S.APPLIED), (P.STREET_REVIEW, S.COMMUNITY_REVIEWED)],
    )
    def test_employer_and_sector_files_have_no_community_or_street_review(
        self, channel: Channel, step: Step, status: Status
    ) -> None:
        with pytest.raises(StepNotAllowed):
            next_status(step, status, channel)

    def test_a_file_by_place_cannot_skip_to_county_approval(self) -> None:
        with pytest.raises(StepNotAllowed) as refused:
            next_status(P.COUNTY_APPROVE, S.APPLIED, Channel.PLACE)
        assert refused.value.allowed == [P.COMMUNITY_REVIEW, P.REJECT]

    @pytest.mark.parametrize(("channel", "status", "allowed"), ALLOWED)
    def test_every_step_not_allowed_is_refused_naming_exactly_the_allowed_ones(
        self, channel: Channel, status: Status, allowed: list[Step]
    ) -> None:
        for step in Step:
            if step in allowed:
                next_status(step, status, channel)
                continue
            with pytest.raises(StepNotAllowed) as refused:
                next_status(step, status, channel)
            assert (refused.value.step, refused.value.status) == (step, status)
            assert refused.value.allowed == allowed

    @pytest.mark.parametrize("channel", list(Channel))
    @pytest.mark.parametrize(
        "status",
        [S.APPLIED, S.COMMUNITY_REVIEWED, S.STREET_REVIEWED, S.COUNTY_APPROVED, S.PUBLICLY_NOTICED],
    )
    def test_a_file_under_review_can_be_rejected_at_any_stage(
        self, channel: Channel, status: Status
    ) -> None:
        assert next_status(P.REJECT, status, channel) is S.REJECTED

    @pytest.mark.parametrize("channel", list(Channel))
    def test_a_rejected_file_can_be_filed_again(self, channel: Channel) -> None:
        assert next_status(P.REAPPLY, S.REJECTED, channel) is S.APPLIED

    @pytest.mark.parametrize("channel", list(Channel))
    def test_an_objection_during_the_notice_returns_the_file_to_county_approved(
        self, channel: Channel
    ) -> None:
        assert next_status(P.OBJECT, S.PUBLICLY_NOTICED, channel) is S.COUNTY_APPROVED

    @pytest.mark.parametrize("channel", list(Channel))
    def test_an_exited_file_takes_no_step_at_all(self, channel: Channel) -> None:
        for step in Step:
            with pytest.raises(StepNotAllowed) as refused:
                next_status(step, S.EXITED, channel)
            assert refused.value.allowed == []

    def test_the_refusal_message_names_the_step_and_the_status(self) -> None:
        with pytest.raises(StepNotAllowed, match="step enroll is not allowed from status applied"):
            next_status(P.ENROLL, S.APPLIED, Channel.PLACE)


class TestAllowedSteps:
    @pytest.mark.parametrize(("channel", "status", "allowed"), ALLOWED)
    def test_the_allowed_steps_are_listed_in_workflow_order(
        self, channel: Channel, status: Status, allowed: list[Step]
    ) -> None:
        assert allowed_steps(status, channel) == allowed


class TestRequiredScope:
    @pytest.mark.parametrize(
        ("step", "status", "scope"),
        [
            (P.COMMUNITY_REVIEW, S.APPLIED, "review:community"),
            (P.STREET_REVIEW, S.COMMUNITY_REVIEWED, "review:street"),
            (P.COUNTY_APPROVE, S.STREET_REVIEWED, "review:county"),
            (P.COUNTY_APPROVE, S.APPLIED, "review:county"),
            (P.START_NOTICE, S.COUNTY_APPROVED, "review:county"),
            (P.OBJECT, S.PUBLICLY_NOTICED, "registry:write"),
            (P.ENROLL, S.PUBLICLY_NOTICED, "review:county"),
            (P.REAPPLY, S.REJECTED, "registry:write"),
            (P.EXIT, S.ENROLLED, "review:county"),
        ],
    )
    def test_each_step_needs_the_scope_of_its_reviewer(
        self, step: Step, status: Status, scope: str
    ) -> None:
        assert required_scope(step, status) == scope

    @pytest.mark.parametrize(
        ("status", "scope"),
        [
            (S.APPLIED, "review:community"),
            (S.COMMUNITY_REVIEWED, "review:street"),
            (S.STREET_REVIEWED, "review:county"),
            (S.COUNTY_APPROVED, "review:county"),
            (S.PUBLICLY_NOTICED, "review:county"),
        ],
    )
    def test_who_may_reject_rises_with_the_stage_the_file_reached(
        self, status: Status, scope: str
    ) -> None:
        assert required_scope(P.REJECT, status) == scope
