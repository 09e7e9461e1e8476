"""The review workflow and the household aggregate as plain objects: no database, no server."""

from __future__ import annotations

from dataclasses import asdict
from datetime import date, timedelta

import pytest

from services.registry.domain.household import (
    Category,
    Cause,
    Helper,
    Household,
    Location,
    PlanGroup,
    PlanMeasure,
    RuleBroken,
)
from services.registry.domain.members import (
    Employment,
    HukouType,
    LabourCapacity,
    Member,
    Relation,
    mask_name,
)
from services.registry.domain.workflow import (
    Channel,
    ExitKind,
    Status,
    Step,
    StepNotAllowed,
    allowed_steps,
    next_status,
    required_scope,
)
from shared.identity import parse_identity_number
from tests.helpers import identity_number

TODAY = date(2026, 11, 23)


def member(serial: int, relation: Relation = Relation.HEAD, name: str = "张三明") -> Member:
    return Member(
        f"m{serial}",
        name,
        parse_identity_number(identity_number(serial=serial), today=TODAY),
        relation,
        HukouType.URBAN,
        LabourCapacity.FULL,
        Employment.UNEMPLOYED,
    )


def household(channel: Channel = Channel.PLACE, **overrides: object) -> Household:
    values: dict[str, object] = {
        "household_id": "h1",
        "location": Location("411302", "建设路1号"),
        "hukou_type": "urban",
        "category": Category.DIBAO,
        "flags": frozenset(),
        "causes": frozenset({Cause.ILLNESS}),
        "channel": channel,
        "submitted_by": None if channel is Channel.PLACE else "市商务局",
        "members": [member(1)],
        "actor": "民政",
        "today": TODAY,
        **overrides,
    }
    return Household.apply(**values)  # type: ignore[arg-type]


class TestWorkflow:
    def test_by_place_the_file_passes_every_review_in_order(self) -> None:
        status = Status.APPLIED
        for step, expected in (
            (Step.COMMUNITY_REVIEW, Status.COMMUNITY_REVIEWED),
            (Step.STREET_REVIEW, Status.STREET_REVIEWED),
            (Step.COUNTY_APPROVE, Status.COUNTY_APPROVED),
            (Step.START_NOTICE, Status.PUBLICLY_NOTICED),
            (Step.ENROLL, Status.ENROLLED),
            (Step.EXIT, Status.EXITED),
        ):
            status = next_status(step, status, Channel.PLACE)
            assert status is expected

    @pytest.mark.parametrize("channel", [Channel.EMPLOYER, Channel.SECTOR])
    def test_employer_and_sector_files_enter_at_county_review(self, channel: Channel) -> None:
        assert allowed_steps(Status.APPLIED, channel) == [Step.COUNTY_APPROVE, Step.REJECT]
        with pytest.raises(StepNotAllowed):
            next_status(Step.COMMUNITY_REVIEW, Status.APPLIED, channel)

    def test_a_step_not_allowed_names_exactly_the_allowed_ones(self) -> None:
        with pytest.raises(StepNotAllowed) as refused:
            next_status(Step.ENROLL, Status.APPLIED, Channel.PLACE)
        assert refused.value.allowed == [Step.COMMUNITY_REVIEW, Step.REJECT]
        assert allowed_steps(Status.PUBLICLY_NOTICED, Channel.PLACE) == [
            Step.OBJECT,
            Step.ENROLL,
            Step.REJECT,
        ]
        assert allowed_steps(Status.REJECTED, Channel.PLACE) == [Step.REAPPLY]
        assert allowed_steps(Status.EXITED, Channel.PLACE) == []

    def test_who_may_reject_rises_with_the_stage_reached(self) -> None:
        assert required_scope(Step.REJECT, Status.APPLIED) == "review:community"
        assert required_scope(Step.REJECT, Status.COMMUNITY_REVIEWED) == "review:street"
        assert required_scope(Step.REJECT, Status.PUBLICLY_NOTICED) == "review:county"
        assert required_scope(Step.OBJECT, Status.PUBLICLY_NOTICED) == "registry:write"


class TestHousehold:
    def test_apply_needs_one_head_distinct_people_and_a_cause(self) -> None:
        with pytest.raises(RuleBroken, match="exactly one member must be the head"):
            household(members=[member(1, Relation.CHILD)])
        with pytest.raises(RuleBroken, match="appears twice"):
            household(members=[member(1), member(1, Relation.SPOUSE)])
        with pytest.raises(RuleBroken, match="cause"):
            household(causes=frozenset())
        with pytest.raises(RuleBroken, match="submitter"):
            household(Channel.EMPLOYER, submitted_by=None)

    def test_apply_records_one_masked_event_and_one_history_line(self) -> None:
        filed = household()
        [event] = filed.events
        assert (event.name, filed.version) == ("applied", 1)
        assert asdict(event)["head_name_masked"] == "张*明"
        assert identity_number(serial=1) not in str(asdict(event))
        assert [(h.version, h.action) for h in filed.history] == [(1, "apply")]

    def test_a_change_bumps_the_version_once_and_a_no_op_records_nothing(self) -> None:
        filed = household()
        changes = filed.change(
            actor="民政", category=Category.DIBAO_EDGE, causes=frozenset({Cause.ILLNESS})
        )
        assert [(c.field, c.old, c.new) for c in changes] == [("category", "dibao", "dibao_edge")]
        assert filed.version == 2
        assert filed.change(actor="民政", category=Category.DIBAO_EDGE) == ()
        assert filed.version == 2
        with pytest.raises(RuleBroken, match="status"):
            filed.change(actor="x", status=Status.ENROLLED)

    def test_notice_enrol_and_exit_follow_their_dates_and_reasons(self) -> None:
        filed = household()
        filed.take_step(Step.COMMUNITY_REVIEW, actor="社区", today=TODAY)
        with pytest.raises(RuleBroken, match="plan"):
            filed.take_step(Step.STREET_REVIEW, actor="街道", today=TODAY)
        filed.set_plan((PlanMeasure(PlanGroup.EMPLOYMENT, "公益性岗位", "人社局"),), actor="街道")
        filed.take_step(Step.STREET_REVIEW, actor="街道", today=TODAY)
        filed.take_step(Step.COUNTY_APPROVE, actor="县", today=TODAY)
        filed.take_step(Step.START_NOTICE, actor="县", today=TODAY, notice_days=7)
        assert filed.notice_ends_on == TODAY + timedelta(days=7)
        with pytest.raises(StepNotAllowed):
            filed.take_step(Step.ENROLL, actor="县", today=TODAY + timedelta(days=6))
        filed.take_step(Step.ENROLL, actor="县", today=TODAY + timedelta(days=7))
        assert filed.enrolled_on == TODAY + timedelta(days=7)
        with pytest.raises(RuleBroken, match="exit_kind"):
            filed.take_step(Step.EXIT, actor="县", today=TODAY, comment="收入稳定")
        filed.take_step(
            Step.EXIT, actor="县", today=TODAY, comment="收入稳定", exit_kind=ExitKind.TUOKUN
        )
        with pytest.raises(RuleBroken, match="no longer change"):
            filed.add_member(member(9, Relation.CHILD), actor="x")

    def test_helpers_visits_and_incomes_keep_their_rules(self) -> None:
        filed = household()
        with pytest.raises(RuleBroken, match="assign a helper"):
            filed.record_visit(
                visit_id="v", visited_on=TODAY, today=TODAY, follow_up_needed=False, actor="x"
            )
        filed.assign_helper(Helper("h", "刘洋", "总工会"), actor="x", reason=None)
        filed.record_visit(
            visit_id="v1", visited_on=TODAY, today=TODAY, follow_up_needed=False, actor="x"
        )
        filed.record_visit(
            visit_id="v0",
            visited_on=TODAY - timedelta(days=3),
            today=TODAY,
            follow_up_needed=False,
            actor="x",
        )
        assert filed.last_visit_on == TODAY
        with pytest.raises(RuleBroken, match="enrolled"):
            filed.record_income(month="2026-10", income_fen=1, actor="x")

    def test_a_long_sequence_leaves_one_history_line_per_version(self) -> None:
        filed = household()
        for i in range(30):
            category = Category.DIBAO if i % 2 else Category.DIBAO_EDGE
            filed.change(actor=f"a{i}", category=category)
        assert [h.version for h in filed.history] == list(range(1, 32))
        assert len(filed.events) == 31


class TestMasking:
    @pytest.mark.parametrize(
        ("name", "masked"),
        [
            ("张三明", "张*明"),
            ("张三", "张*"),
            ("张", "*"),
            ("𠮷田㐂", "𠮷*㐂"),
            ("Ann李", "A**李"),
        ],
    )
    def test_names_keep_the_first_and_last_character(self, name: str, masked: str) -> None:
        assert mask_name(name) == masked
