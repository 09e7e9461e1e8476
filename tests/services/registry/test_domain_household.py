"""The household file (一户一档) and its members as plain objects: no database, no server."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from datetime import date, timedelta

import pytest

from services.registry.domain import events as ev
from services.registry.domain.household import (
    Category,
    Cause,
    FieldChange,
    Flag,
    Helper,
    HistoryEntry,
    Household,
    Location,
    PlanGroup,
    PlanMeasure,
    RuleBroken,
)
from services.registry.domain.members import (
    EducationStage,
    Employment,
    HukouType,
    InvalidText,
    LabourCapacity,
    Member,
    Relation,
    clean_text,
    mask_name,
)
from services.registry.domain.workflow import Channel, ExitKind, Status, Step, StepNotAllowed
from shared.identity import parse_identity_number
from tests.helpers import identity_number

TODAY = date(2026, 3, 10)
NOTICE_ENDS = TODAY + timedelta(days=7)
PLAN = (PlanMeasure(PlanGroup.EMPLOYMENT, "公益性岗位", "人社局"),)
HEAD_NUMBER = identity_number(serial=1)


def person(
    serial: int,
    relation: Relation = Relation.HEAD,
    *,
    name: str = "张三明",
    birth: date = date(1980, 5, 17),
    number: str | None = None,
) -> Member:
    """A member whose id is `m<serial>` and whose identity number is valid."""
    raw = number or identity_number(birth=birth, serial=serial)
    return Member(
        id=f"m{serial}",
        name=name,
        identity=parse_identity_number(raw, today=TODAY),
        relation=relation,
        hukou_type=HukouType.URBAN,
        labour_capacity=LabourCapacity.FULL,
        employment=Employment.UNEMPLOYED,
    )


def spouse() -> Member:
    return person(2, Relation.SPOUSE, name="李娟", birth=date(1982, 8, 1))


def filed(
    *,
    channel: Channel = Channel.PLACE,
    submitted_by: str | None = None,
    members: list[Member] | None = None,
    causes: frozenset[Cause] = frozenset({Cause.ILLNESS}),
) -> Household:
    """A household just filed, by default by place with a head and a spouse."""
    return Household.apply(
        household_id="h1",
        location=Location("411302", "建设路12号"),
        hukou_type="urban",
        category=Category.DIBAO,
        flags=frozenset(),
        causes=causes,
        channel=channel,
        submitted_by=submitted_by,
        members=[person(1), spouse()] if members is None else members,
        actor="社区",
        today=TODAY,
    )


def reviewed_to(status: Status) -> Household:
    """A household by place walked forward through the workflow until it reaches `status`."""
    household = filed()
    path: list[tuple[Step, Status]] = [
        (Step.COMMUNITY_REVIEW, Status.COMMUNITY_REVIEWED),
        (Step.STREET_REVIEW, Status.STREET_REVIEWED),
        (Step.COUNTY_APPROVE, Status.COUNTY_APPROVED),
        (Step.START_NOTICE, Status.PUBLICLY_NOTICED),
        (Step.ENROLL, Status.ENROLLED),
    ]
    for step, reached in path:
        if household.status is status:
            break
        if step is Step.STREET_REVIEW:
            household.set_plan(PLAN, actor="街道")
        day = NOTICE_ENDS if step is Step.ENROLL else TODAY
        household.take_step(step, actor="审核人", today=day)
        assert household.status is reached
    return household


def rejected() -> Household:
    household = filed()
    household.take_step(Step.REJECT, actor="社区", today=TODAY, comment="收入超标")
    return household


def exited() -> Household:
    household = reviewed_to(Status.ENROLLED)
    household.take_step(
        Step.EXIT, actor="县", today=TODAY, comment="收入稳定", exit_kind=ExitKind.TUOKUN
    )
    return household


def snapshot(household: Household) -> tuple[int, int, int, Status]:
    return household.version, len(household.events), len(household.history), household.status


def masked_number(number: str) -> str:
    return number[:6] + "*" * 11 + number[-1]


class TestApply:
    def test_a_file_without_a_head_is_refused(self) -> None:
        with pytest.raises(RuleBroken, match="exactly one member must be the head") as refused:
            filed(members=[person(1, Relation.SPOUSE), person(2, Relation.CHILD)])
        assert refused.value.field == "members"

    def test_a_file_with_two_heads_is_refused(self) -> None:
        with pytest.raises(RuleBroken, match="exactly one member must be the head"):
            filed(members=[person(1), person(2)])

    def test_a_file_with_no_members_is_refused(self) -> None:
        with pytest.raises(RuleBroken, match="head"):
            filed(members=[])

    def test_the_same_identity_number_twice_in_one_household_is_refused(self) -> None:
        with pytest.raises(RuleBroken, match="appears twice") as refused:
            filed(members=[person(1), person(1, Relation.SPOUSE, name="李娟")])
        assert refused.value.field == "members"

    def test_a_number_typed_in_full_width_digits_is_still_the_same_person(self) -> None:
        full_width = "".join(chr(0xFF10 + int(c)) if c.isdigit() else c for c in HEAD_NUMBER)
        twin = person(9, Relation.SPOUSE, name="李娟", number=full_width)
        with pytest.raises(RuleBroken, match="appears twice"):
            filed(members=[person(1), twin])

    @pytest.mark.parametrize("channel", [Channel.EMPLOYER, Channel.SECTOR])
    @pytest.mark.parametrize("submitted_by", [None, ""])
    def test_an_employer_or_sector_file_must_name_its_submitter(
        self, channel: Channel, submitted_by: str | None
    ) -> None:
        with pytest.raises(RuleBroken, match="names its submitter") as refused:
            filed(channel=channel, submitted_by=submitted_by)
        assert refused.value.field == "submitted_by"

    @pytest.mark.parametrize("channel", [Channel.EMPLOYER, Channel.SECTOR])
    def test_an_employer_or_sector_file_with_a_submitter_is_filed(self, channel: Channel) -> None:
        household = filed(channel=channel, submitted_by="市商务局")
        assert (household.channel, household.submitted_by) == (channel, "市商务局")

    def test_a_file_by_place_needs_no_submitter(self) -> None:
        assert filed(submitted_by=None).status is Status.APPLIED

    def test_a_file_without_a_cause_of_hardship_is_refused(self) -> None:
        with pytest.raises(RuleBroken, match="at least one cause") as refused:
            filed(causes=frozenset())
        assert refused.value.field == "causes"

    def test_filing_records_one_applied_event_with_the_head_masked(self) -> None:
        household = filed(members=[spouse(), person(1)])
        assert household.events == [
            ev.HouseholdApplied(
                household_id="h1",
                category="dibao",
                channel="place",
                member_count=2,
                head_name_masked="张*明",
                head_identity_masked=masked_number(HEAD_NUMBER),
                applied_on="2026-03-10",
            )
        ]

    def test_filing_starts_at_version_one_with_one_history_line(self) -> None:
        household = filed()
        assert (household.status, household.version) == (Status.APPLIED, 1)
        assert household.history == [HistoryEntry(1, "社区", "apply")]


class TestChange:
    def test_a_change_bumps_the_version_once_and_records_the_field(self) -> None:
        household = filed()
        changes = household.change(actor="民政", category=Category.DIBAO_EDGE)
        assert changes == (FieldChange("category", "dibao", "dibao_edge"),)
        assert household.category is Category.DIBAO_EDGE
        assert household.version == 2
        assert household.events[-1] == ev.HouseholdChanged("h1", ("category",))
        assert household.history[-1] == HistoryEntry(2, "民政", "change", changes)

    def test_only_the_fields_that_really_changed_are_named(self) -> None:
        household = filed()
        household.change(
            actor="民政",
            category=Category.DIBAO,
            causes=frozenset({Cause.ILLNESS, Cause.EDUCATION}),
            flags=frozenset({Flag.ZERO_EMPLOYMENT}),
            hukou_type="urban",
        )
        assert household.version == 2
        assert household.events[-1] == ev.HouseholdChanged("h1", ("causes", "flags"))
        assert household.history[-1].changes == (
            FieldChange("causes", ["illness"], ["education", "illness"]),
            FieldChange("flags", [], ["zero_employment"]),
        )

    def test_a_changed_location_is_kept_old_and_new_in_the_history(self) -> None:
        household = filed()
        household.change(actor="民政", location=Location("411302", "建设路14号"))
        [change] = household.history[-1].changes
        assert change.field == "location"
        assert (change.old["address"], change.new["address"]) == ("建设路12号", "建设路14号")

    def test_a_change_to_the_same_values_records_nothing(self) -> None:
        household = filed()
        before = snapshot(household)
        assert household.change(actor="民政", category=Category.DIBAO, hukou_type="urban") == ()
        assert household.change(actor="民政") == ()
        assert snapshot(household) == before

    @pytest.mark.parametrize("field_name", ["status", "version", "members", "notice_ends_on"])
    def test_a_field_outside_the_editable_ones_is_refused_by_name(self, field_name: str) -> None:
        household = filed()
        before = snapshot(household)
        with pytest.raises(RuleBroken, match="is not editable") as refused:
            household.change(actor="民政", **{field_name: Status.ENROLLED})
        assert refused.value.field == field_name
        assert snapshot(household) == before

    def test_a_refused_change_changes_none_of_the_fields_it_came_with(self) -> None:
        household = filed()
        with pytest.raises(RuleBroken):
            household.change(actor="民政", category=Category.TEKUN, status=Status.ENROLLED)
        assert (household.category, household.status) == (Category.DIBAO, Status.APPLIED)

    def test_clearing_every_cause_of_hardship_is_refused(self) -> None:
        household = filed()
        with pytest.raises(RuleBroken) as refused:
            household.change(actor="民政", causes=frozenset())
        assert refused.value.field == "causes"
        assert household.causes == frozenset({Cause.ILLNESS})


class TestUpdateMember:
    def test_a_renamed_member_is_masked_in_the_history(self) -> None:
        household = filed()
        household.update_member("m2", actor="社区", name="李娟娟")
        [change] = household.history[-1].changes
        assert (change.old, change.new) == ("李*", "李*娟")

    def test_a_member_change_names_the_changed_fields(self) -> None:
        household = filed()
        fields = household.update_member(
            "m2", actor="社区", employment=Employment.EMPLOYED, union_member=False
        )
        assert fields == ("members.employment",)
        assert household.events[-1] == ev.HouseholdChanged("h1", ("members.employment",))
        assert household.version == 2


class TestTakeStep:
    def test_the_street_review_without_a_draft_plan_is_refused(self) -> None:
        household = reviewed_to(Status.COMMUNITY_REVIEWED)
        before = snapshot(household)
        with pytest.raises(RuleBroken, match="draft help plan") as refused:
            household.take_step(Step.STREET_REVIEW, actor="街道", today=TODAY)
        assert refused.value.field == "plan"
        assert snapshot(household) == before

    def test_each_review_records_its_level_and_reviewer(self) -> None:
        household = reviewed_to(Status.STREET_REVIEWED)
        reviews = [e for e in household.events if isinstance(e, ev.HouseholdReviewed)]
        assert reviews == [
            ev.HouseholdReviewed("h1", "community", "审核人"),
            ev.HouseholdReviewed("h1", "street", "审核人"),
        ]
        assert household.history[-1].changes == (
            FieldChange("status", "community_reviewed", "street_reviewed"),
        )

    @pytest.mark.parametrize("days", [1, 7, 15])
    def test_the_notice_ends_the_given_number_of_days_after_it_starts(self, days: int) -> None:
        household = reviewed_to(Status.COUNTY_APPROVED)
        household.take_step(Step.START_NOTICE, actor="县", today=TODAY, notice_days=days)
        assert household.notice_ends_on == TODAY + timedelta(days=days)
        assert household.events[-1] == ev.HouseholdNoticed(
            "h1", TODAY.isoformat(), (TODAY + timedelta(days=days)).isoformat()
        )

    def test_enrolling_before_the_notice_ends_is_refused(self) -> None:
        household = reviewed_to(Status.PUBLICLY_NOTICED)
        before = snapshot(household)
        with pytest.raises(StepNotAllowed) as refused:
            household.take_step(Step.ENROLL, actor="县", today=NOTICE_ENDS - timedelta(days=1))
        assert refused.value.allowed == [Step.OBJECT, Step.REJECT]
        assert snapshot(household) == before
        assert household.enrolled_on is None

    @pytest.mark.parametrize("late", [0, 1, 30])
    def test_enrolling_on_or_after_the_day_the_notice_ends_opens_the_file(self, late: int) -> None:
        household = reviewed_to(Status.PUBLICLY_NOTICED)
        day = NOTICE_ENDS + timedelta(days=late)
        household.take_step(Step.ENROLL, actor="县", today=day)
        assert (household.status, household.enrolled_on) == (Status.ENROLLED, day)
        assert household.events[-1] == ev.HouseholdEnrolled("h1", day.isoformat(), "dibao")

    @pytest.mark.parametrize(
        ("status", "step"),
        [
            (Status.APPLIED, Step.REJECT),
            (Status.PUBLICLY_NOTICED, Step.REJECT),
            (Status.PUBLICLY_NOTICED, Step.OBJECT),
            (Status.ENROLLED, Step.EXIT),
        ],
    )
    @pytest.mark.parametrize("comment", [None, "", "   ", "\u3000"])
    def test_reject_object_and_exit_need_a_reason(
        self, status: Status, step: Step, comment: str | None
    ) -> None:
        household = reviewed_to(status)
        before = snapshot(household)
        with pytest.raises(RuleBroken, match="needs a reason") as refused:
            household.take_step(
                step, actor="县", today=TODAY, comment=comment, exit_kind=ExitKind.TUOKUN
            )
        assert refused.value.field == "comment"
        assert snapshot(household) == before

    def test_a_rejection_keeps_its_reason_and_the_stage_it_happened_at(self) -> None:
        household = reviewed_to(Status.COMMUNITY_REVIEWED)
        household.take_step(Step.REJECT, actor="街道", today=TODAY, comment="有商品房两套")
        assert (household.status, household.rejection_reason) == (Status.REJECTED, "有商品房两套")
        assert household.events[-1] == ev.HouseholdRejected(
            "h1", "community_reviewed", "有商品房两套"
        )

    def test_a_rejected_file_can_be_filed_again_and_starts_over(self) -> None:
        household = rejected()
        household.take_step(Step.REAPPLY, actor="社区", today=TODAY + timedelta(days=40))
        assert (household.status, household.rejection_reason) == (Status.APPLIED, None)
        event = household.events[-1]
        assert isinstance(event, ev.HouseholdApplied)
        assert event.applied_on == (TODAY + timedelta(days=40)).isoformat()
        assert household.allowed_steps() == [Step.COMMUNITY_REVIEW, Step.REJECT]

    def test_an_objection_during_the_notice_returns_the_file_to_county_approved(self) -> None:
        household = reviewed_to(Status.PUBLICLY_NOTICED)
        household.take_step(Step.OBJECT, actor="群众", today=TODAY, comment="家中有车")
        assert (household.status, household.notice_ends_on) == (Status.COUNTY_APPROVED, None)
        assert household.events[-1] == ev.HouseholdObjected("h1", "家中有车")
        with pytest.raises(StepNotAllowed):
            household.take_step(Step.ENROLL, actor="县", today=NOTICE_ENDS)

    def test_after_an_objection_a_new_notice_must_run_its_full_length(self) -> None:
        household = reviewed_to(Status.PUBLICLY_NOTICED)
        household.take_step(Step.OBJECT, actor="群众", today=TODAY, comment="家中有车")
        later = TODAY + timedelta(days=20)
        household.take_step(Step.START_NOTICE, actor="县", today=later, notice_days=7)
        with pytest.raises(StepNotAllowed):
            household.take_step(Step.ENROLL, actor="县", today=later + timedelta(days=6))
        household.take_step(Step.ENROLL, actor="县", today=later + timedelta(days=7))
        assert household.status is Status.ENROLLED

    def test_exit_needs_its_kind(self) -> None:
        household = reviewed_to(Status.ENROLLED)
        with pytest.raises(RuleBroken, match="脱困, 解困 or 退出") as refused:
            household.take_step(Step.EXIT, actor="县", today=TODAY, comment="收入稳定")
        assert refused.value.field == "exit_kind"
        assert household.status is Status.ENROLLED

    def test_exit_keeps_its_kind_reason_and_date(self) -> None:
        household = reviewed_to(Status.ENROLLED)
        day = TODAY + timedelta(days=200)
        household.take_step(
            Step.EXIT, actor="县", today=day, comment="收入稳定", exit_kind=ExitKind.JIEKUN
        )
        assert (household.status, household.exit_kind) == (Status.EXITED, ExitKind.JIEKUN)
        assert (household.exit_reason, household.exited_on) == ("收入稳定", day)
        assert household.events[-1] == ev.HouseholdExited(
            "h1", "jiekun", "收入稳定", day.isoformat()
        )

    @pytest.mark.parametrize("channel", [Channel.EMPLOYER, Channel.SECTOR])
    def test_an_employer_or_sector_file_goes_from_application_to_county_approval(
        self, channel: Channel
    ) -> None:
        household = filed(channel=channel, submitted_by="市总工会")
        with pytest.raises(StepNotAllowed) as refused:
            household.take_step(Step.COMMUNITY_REVIEW, actor="社区", today=TODAY)
        assert refused.value.allowed == [Step.COUNTY_APPROVE, Step.REJECT]
        household.take_step(Step.COUNTY_APPROVE, actor="县", today=TODAY)
        assert household.status is Status.COUNTY_APPROVED
        assert household.events[-1] == ev.HouseholdApproved("h1", "县")

    def test_a_step_not_allowed_leaves_the_file_as_it_was(self) -> None:
        household = filed()
        before = snapshot(household)
        with pytest.raises(StepNotAllowed) as refused:
            household.take_step(Step.ENROLL, actor="县", today=NOTICE_ENDS)
        assert refused.value.allowed == [Step.COMMUNITY_REVIEW, Step.REJECT]
        assert snapshot(household) == before


class TestClosedFile:
    @pytest.mark.parametrize("close", [rejected, exited])
    def test_a_rejected_or_exited_file_refuses_changes(
        self, close: Callable[[], Household]
    ) -> None:
        household = close()
        with pytest.raises(RuleBroken, match="can no longer change") as refused:
            household.change(actor="民政", category=Category.DIBAO_EDGE)
        assert refused.value.field == "household"

    @pytest.mark.parametrize("close", [rejected, exited])
    def test_a_rejected_or_exited_file_refuses_new_and_removed_members(
        self, close: Callable[[], Household]
    ) -> None:
        household = close()
        with pytest.raises(RuleBroken, match="can no longer change") as refused:
            household.add_member(person(3, Relation.CHILD, birth=date(2012, 1, 1)), actor="x")
        assert refused.value.field == "members"
        with pytest.raises(RuleBroken, match="can no longer change"):
            household.remove_member("m2", actor="x", reason="离婚")
        with pytest.raises(RuleBroken, match="can no longer change"):
            household.update_member("m2", actor="x", employment=Employment.EMPLOYED)

    @pytest.mark.parametrize("close", [rejected, exited])
    def test_a_rejected_or_exited_file_refuses_a_plan(self, close: Callable[[], Household]) -> None:
        household = close()
        before = snapshot(household)
        plan = (PlanMeasure(PlanGroup.MEDICAL, "大病救助", "医保局"),)
        with pytest.raises(RuleBroken, match="can no longer change") as refused:
            household.set_plan(plan, actor="街道")
        assert refused.value.field == "plan"
        assert snapshot(household) == before


class TestAddMember:
    def test_a_new_member_is_recorded_with_a_masked_history_line(self) -> None:
        household = filed()
        child = person(3, Relation.CHILD, name="张小红", birth=date(2012, 1, 1))
        household.add_member(child, actor="社区")
        assert [m.id for m in household.members] == ["m1", "m2", "m3"]
        assert household.version == 2
        assert household.events[-1] == ev.MemberAdded("h1", "m3", "child")
        [change] = household.history[-1].changes
        number = child.identity.number
        assert (change.old, change.new) == (None, f"张*红 {masked_number(number)}")

    def test_a_second_head_is_refused(self) -> None:
        household = filed()
        before = snapshot(household)
        with pytest.raises(RuleBroken, match="already has a head") as refused:
            household.add_member(person(3, name="王五"), actor="社区")
        assert refused.value.field == "relation"
        assert snapshot(household) == before

    def test_a_person_already_in_the_household_is_refused(self) -> None:
        household = filed()
        again = person(2, Relation.CHILD, name="李娟", birth=date(1982, 8, 1))
        with pytest.raises(RuleBroken, match="already a member") as refused:
            household.add_member(again, actor="社区")
        assert refused.value.field == "identity_number"
        assert len(household.members) == 2


class TestRemoveMember:
    def test_the_head_cannot_be_removed(self) -> None:
        household = filed()
        before = snapshot(household)
        with pytest.raises(RuleBroken, match="head cannot be removed") as refused:
            household.remove_member("m1", actor="社区", reason="迁出")
        assert refused.value.field == "member_id"
        assert snapshot(household) == before

    def test_an_unknown_member_cannot_be_removed(self) -> None:
        with pytest.raises(RuleBroken, match="no member m9"):
            filed().remove_member("m9", actor="社区", reason="迁出")

    def test_another_member_is_removed_with_the_reason_in_the_history(self) -> None:
        household = filed()
        removed = household.remove_member("m2", actor="社区", reason="迁出")
        assert removed.id == "m2"
        assert [m.id for m in household.members] == ["m1"]
        assert household.events[-1] == ev.MemberRemoved("h1", "m2")
        assert (household.version, household.history[-1].comment) == (2, "迁出")


class TestRecordVisit:
    def test_a_visit_without_a_helper_is_refused(self) -> None:
        household = filed()
        with pytest.raises(RuleBroken, match="assign a helper") as refused:
            household.record_visit(
                visit_id="v1", visited_on=TODAY, today=TODAY, follow_up_needed=False, actor="x"
            )
        assert refused.value.field == "helper"

    def test_assigning_a_helper_records_the_name_masked(self) -> None:
        household = filed()
        household.assign_helper(Helper("k1", "刘洋洋", "市总工会"), actor="工会", reason=None)
        assert household.events[-1] == ev.HelperAssigned("h1", "k1", "刘*洋", "市总工会")
        assert household.history[-1].changes == (FieldChange("helper", None, "刘*洋 (市总工会)"),)

    def test_a_visit_in_the_future_is_refused(self) -> None:
        household = filed()
        household.assign_helper(Helper("k1", "刘洋", "市总工会"), actor="工会", reason=None)
        before = snapshot(household)
        with pytest.raises(RuleBroken, match="future") as refused:
            household.record_visit(
                visit_id="v1",
                visited_on=TODAY + timedelta(days=1),
                today=TODAY,
                follow_up_needed=False,
                actor="x",
            )
        assert refused.value.field == "visited_on"
        assert snapshot(household) == before

    def test_the_last_visit_is_the_latest_date_not_the_latest_entry(self) -> None:
        household = filed()
        household.assign_helper(Helper("k1", "刘洋", "市总工会"), actor="工会", reason=None)
        for visit_id, days_ago in (("v1", 10), ("v2", 0), ("v3", 5)):
            household.record_visit(
                visit_id=visit_id,
                visited_on=TODAY - timedelta(days=days_ago),
                today=TODAY,
                follow_up_needed=False,
                actor="刘洋",
            )
        assert household.last_visit_on == TODAY
        assert household.events[-1] == ev.VisitRecorded(
            "h1", "v3", (TODAY - timedelta(days=5)).isoformat(), "k1", False
        )


class TestRecordIncome:
    @pytest.mark.parametrize("status", [Status.APPLIED, Status.PUBLICLY_NOTICED])
    def test_an_income_before_enrolment_is_refused(self, status: Status) -> None:
        with pytest.raises(RuleBroken, match="enrolled households") as refused:
            reviewed_to(status).record_income(month="2026-03", income_fen=100, actor="x")
        assert refused.value.field == "status"

    def test_an_income_after_exit_is_refused(self) -> None:
        with pytest.raises(RuleBroken, match="enrolled households"):
            exited().record_income(month="2026-03", income_fen=100, actor="x")

    @pytest.mark.parametrize(
        "month", ["2026-13", "2026-00", "2026-3", "202603", "26-03", "2026-03-01", "2026/03"]
    )
    def test_a_month_not_written_yyyy_mm_is_refused(self, month: str) -> None:
        with pytest.raises(RuleBroken, match="YYYY-MM") as refused:
            reviewed_to(Status.ENROLLED).record_income(month=month, income_fen=100, actor="x")
        assert refused.value.field == "month"

    def test_a_negative_income_is_refused(self) -> None:
        with pytest.raises(RuleBroken, match="negative") as refused:
            reviewed_to(Status.ENROLLED).record_income(month="2026-03", income_fen=-1, actor="x")
        assert refused.value.field == "income_fen"

    def test_an_income_of_zero_is_recorded_with_the_member_count(self) -> None:
        household = reviewed_to(Status.ENROLLED)
        household.record_income(month="2026-03", income_fen=0, actor="x")
        assert household.events[-1] == ev.IncomeRecorded("h1", "2026-03", 0, 2)


class TestDeclare:
    def test_an_item_for_someone_outside_the_household_is_refused(self) -> None:
        household = filed()
        before = snapshot(household)
        items = [
            {"member_id": "m1", "kind": "income", "item": "wage", "amount_fen": 150_000},
            {"member_id": "m9", "kind": "income", "item": "wage", "amount_fen": 1},
        ]
        with pytest.raises(RuleBroken, match="not a member") as refused:
            household.declare(items, actor="社区")
        assert refused.value.field == "items[1].member_id"
        assert snapshot(household) == before

    def test_a_negative_amount_is_refused(self) -> None:
        household = filed()
        items = [{"member_id": "m2", "kind": "asset", "item": "deposit", "amount_fen": -5}]
        with pytest.raises(RuleBroken, match="negative") as refused:
            household.declare(items, actor="社区")
        assert refused.value.field == "items[0].amount_fen"

    def test_a_declaration_is_recorded_as_a_change_of_declarations(self) -> None:
        household = filed()
        items = [{"member_id": "m2", "kind": "income", "item": "wage", "amount_fen": 180_000}]
        household.declare(items, actor="社区")
        assert household.events[-1] == ev.HouseholdChanged("h1", ("declarations",))
        assert household.history[-1].changes == (FieldChange("income.wage", None, 180_000),)


def thirty_changes() -> tuple[Household, list[Member]]:
    """A household taken through 30 mixed changes, from filing to exit."""
    household = filed()
    child = person(3, Relation.CHILD, name="张小红", birth=date(2012, 1, 1))
    grandpa = person(4, Relation.PARENT, name="张老汉", birth=date(1950, 2, 2))
    later = NOTICE_ENDS + timedelta(days=1)
    h = household
    ops: list[Callable[[], object]] = [
        lambda: h.change(actor="社区", category=Category.DIBAO_EDGE),
        lambda: h.add_member(child, actor="社区"),
        lambda: h.update_member("m3", actor="社区", education_stage=EducationStage.JUNIOR_HIGH),
        lambda: h.change(actor="社区", causes=frozenset({Cause.ILLNESS, Cause.EDUCATION})),
        lambda: h.assign_helper(Helper("k1", "刘洋", "市总工会"), actor="工会", reason=None),
        lambda: h.record_visit(
            visit_id="v1", visited_on=TODAY, today=TODAY, follow_up_needed=True, actor="刘洋"
        ),
        lambda: h.declare(
            [{"member_id": "m1", "kind": "income", "item": "wage", "amount_fen": 90_000}],
            actor="社区",
        ),
        lambda: h.take_step(Step.COMMUNITY_REVIEW, actor="社区", today=TODAY),
        lambda: h.set_plan(PLAN, actor="街道"),
        lambda: h.take_step(Step.STREET_REVIEW, actor="街道", today=TODAY),
        lambda: h.take_step(Step.COUNTY_APPROVE, actor="县", today=TODAY),
        lambda: h.take_step(Step.START_NOTICE, actor="县", today=TODAY),
        lambda: h.take_step(Step.OBJECT, actor="群众", today=TODAY, comment="家中有车"),
        lambda: h.change(actor="县", flags=frozenset({Flag.ZERO_EMPLOYMENT})),
        lambda: h.take_step(Step.START_NOTICE, actor="县", today=TODAY),
        lambda: h.take_step(Step.ENROLL, actor="县", today=NOTICE_ENDS),
        lambda: h.add_member(grandpa, actor="社区"),
        lambda: h.remove_member("m4", actor="社区", reason="迁出"),
        *(
            (lambda m=m: h.record_income(month=f"2026-{m:02d}", income_fen=80_000, actor="x"))
            for m in range(4, 11)
        ),
        lambda: h.assign_helper(Helper("k2", "王芳", "街道办"), actor="工会", reason="调动"),
        lambda: h.record_visit(
            visit_id="v2", visited_on=later, today=later, follow_up_needed=False, actor="王芳"
        ),
        lambda: h.change(actor="社区", location=Location("411302", "建设路14号")),
        lambda: h.update_member("m2", actor="社区", employment=Employment.FLEXIBLE),
        lambda: h.take_step(
            Step.EXIT, actor="县", today=later, comment="收入稳定", exit_kind=ExitKind.TUOKUN
        ),
    ]
    assert len(ops) == 30
    for op in ops:
        version, event_count, history_count, _ = snapshot(household)
        op()
        assert snapshot(household)[:3] == (version + 1, event_count + 1, history_count + 1)
    return household, [person(1), spouse(), child, grandpa]


class TestHistoryAndEvents:
    def test_thirty_mixed_changes_leave_one_history_line_per_version(self) -> None:
        household, _ = thirty_changes()
        assert household.status is Status.EXITED
        assert household.version == 31
        versions = [entry.version for entry in household.history]
        assert versions == list(range(1, 32))

    def test_thirty_mixed_changes_leave_one_event_for_each(self) -> None:
        household, _ = thirty_changes()
        assert len(household.events) == 31
        assert isinstance(household.events[0], ev.HouseholdApplied)
        assert isinstance(household.events[-1], ev.HouseholdExited)
        assert all(event.household_id == "h1" for event in household.events)

    def test_no_event_carries_a_plaintext_identity_number_or_full_name(self) -> None:
        household, people = thirty_changes()
        secrets = [p.identity.number for p in people] + [p.name for p in people]
        secrets += ["刘洋", "王芳"]
        for event in household.events:
            text = repr(asdict(event))
            assert not [s for s in secrets if s in text], event


class TestMaskName:
    @pytest.mark.parametrize(
        ("name", "masked"),
        [
            ("张三明", "张*明"),
            ("张三", "张*"),
            ("张", "*"),
            ("欧阳娜娜", "欧**娜"),
            ("𠮷㐂", "𠮷*"),
            ("𠮷田㐂", "𠮷*㐂"),
            ("Ann李", "A**李"),
            ("阿依古丽·买买提", "阿******提"),
        ],
    )
    def test_a_name_keeps_its_family_name_and_last_character(self, name: str, masked: str) -> None:
        assert mask_name(name) == masked

    @pytest.mark.parametrize("name", ["张三明", "𠮷田㐂", "Ann李", "欧阳娜娜"])
    def test_a_masked_name_is_as_long_as_the_name(self, name: str) -> None:
        assert len(mask_name(name)) == len(name)


class TestCleanText:
    @pytest.mark.parametrize(
        ("raw", "clean"),
        [
            ("  张三明  ", "张三明"),
            ("\u3000张三明\u3000", "张三明"),
            ("\t 建设路 12 号\r\n", "建设路 12 号"),
            ("\u3000 𠮷田㐂 \u3000", "𠮷田㐂"),
        ],
    )
    def test_spaces_around_the_text_are_trimmed_ideographic_ones_too(
        self, raw: str, clean: str
    ) -> None:
        assert clean_text(raw, field_name="name", max_length=20) == clean

    @pytest.mark.parametrize("raw", ["", "   ", "\u3000\u3000", " \t\u3000\n"])
    def test_empty_text_is_refused_naming_the_field(self, raw: str) -> None:
        with pytest.raises(InvalidText, match="name: must not be empty") as refused:
            clean_text(raw, field_name="name", max_length=20)
        assert refused.value.field == "name"

    def test_text_longer_than_the_limit_is_refused_naming_the_field(self) -> None:
        with pytest.raises(InvalidText, match="longer than 5 characters") as refused:
            clean_text("建设路十二号", field_name="address", max_length=5)
        assert refused.value.field == "address"

    def test_text_exactly_at_the_limit_is_kept_and_the_trimmed_spaces_do_not_count(self) -> None:
        assert clean_text("\u3000建设路12\u3000", field_name="address", max_length=5) == "建设路12"

    def test_a_rare_character_counts_as_one(self) -> None:
        assert clean_text("𠮷" * 3, field_name="name", max_length=3) == "𠮷𠮷𠮷"
