"""The rules as plain functions: which event causes which message, to whom, by which channel."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from services.notifications.domain.rules import (
    InvalidRules,
    Occurrence,
    RuleBook,
    intents,
    load_rulebook,
    short_type,
    yuan,
)
from tests.services.notifications.samples import SAMPLES

RULES = Path(__file__).parents[3] / "services" / "notifications" / "rules.yaml"


@pytest.fixture(scope="module")
def book() -> RuleBook:
    return load_rulebook(yaml.safe_load(RULES.read_text(encoding="utf-8")))


def occurrence(short: str, **data: object) -> Occurrence:
    return Occurrence(
        short_type=short,
        cause="cause-1",
        household_id="hh-1",
        region="411302",
        data={**SAMPLES[short], **data},
        date="2026-11-23",
    )


def sent(book: RuleBook, short: str, *, on_file: str | None = None, **data: object) -> set[str]:
    return {
        f"{i.template} {i.channel} {i.recipient.key}"
        for i in intents(book, occurrence(short, **data), helper_id=on_file)
    }


class TestRules:
    def test_helper_assigned_tells_the_helper(self, book: RuleBook) -> None:
        assert sent(book, "registry.household.helper_assigned") == {
            "helper_assigned inbox helper:H001"
        }

    def test_a_visit_due_goes_to_the_helper_on_file(self, book: RuleBook) -> None:
        assert sent(book, "schedule.visit_due", on_file="H9", helper_id=None) == {
            "visit_due inbox helper:H9"
        }

    def test_a_visit_due_without_a_helper_goes_to_the_county_office(self, book: RuleBook) -> None:
        found = intents(book, occurrence("schedule.visit_due", helper_id=None))
        assert [(i.recipient.key, i.context["unassigned"]) for i in found] == [
            ("county_office:411302", True)
        ]

    def test_an_overdue_visit_tells_the_county_office(self, book: RuleBook) -> None:
        assert sent(book, "schedule.visit_overdue") == {
            "visit_overdue inbox county_office:411302",
            "visit_overdue email county_office:411302",
        }

    def test_notice_start_and_end_tell_the_county_office(self, book: RuleBook) -> None:
        assert sent(book, "registry.household.noticed") == {
            "notice_started inbox county_office:411302"
        }
        assert sent(book, "schedule.notice_ended") == {
            "notice_ended inbox county_office:411302",
            "notice_ended email county_office:411302",
        }

    def test_a_verification_with_discrepancies_tells_the_county_office(
        self, book: RuleBook
    ) -> None:
        assert sent(book, "verification.verification.completed") == {
            "verification_discrepancy inbox county_office:411302",
            "verification_discrepancy email county_office:411302",
        }

    def test_a_clean_verification_tells_nobody(self, book: RuleBook) -> None:
        clean = {"discrepancies": [], "unavailable_departments": []}
        assert sent(book, "verification.verification.completed", **clean) == set()

    def test_entitlements_tell_the_household_and_refer_each_department_once(
        self, book: RuleBook
    ) -> None:
        found = intents(book, occurrence("benefits.entitlements.determined"))
        assert {f"{i.template} {i.channel} {i.recipient.key}" for i in found} == {
            "entitlements_determined sms household:hh-1",
            *(
                f"referral {channel} department:{code}:411302"
                for code in ("minzheng", "renshe", "yibao", "jiaoyu", "gonghui", "zhujian")
                for channel in ("webhook", "inbox")
            ),
        }
        renshe = next(i for i in found if i.recipient.id == "renshe:411302")
        assert [m["code"] for m in renshe.context["measures"]] == ["job_training", "public_job"]
        assert renshe.context["department_name"].startswith("人力资源和社会保障局")

    def test_a_department_named_in_chinese_is_referred_under_its_code(self, book: RuleBook) -> None:
        measures = [
            {"code": "a", "amount_fen": 1, "department": "人社局"},
            {"code": "b", "amount_fen": 2, "department": "renshe"},
            {"code": "c", "amount_fen": 3, "department": "气象局"},  # unknown: kept as named
        ]
        found = intents(book, occurrence("benefits.entitlements.determined", measures=measures))
        referred = {i.recipient.id: i.context["measures"] for i in found if i.channel == "inbox"}
        assert {k: [m["code"] for m in v] for k, v in referred.items()} == {
            "renshe:411302": ["a", "b"],
            "气象局:411302": ["c"],
        }

    def test_changed_entitlements_tell_the_household_again(self, book: RuleBook) -> None:
        assert "entitlements_changed sms household:hh-1" in sent(
            book, "benefits.entitlements.changed"
        )

    def test_exit_eligibility_and_rechecks_tell_the_county_office(self, book: RuleBook) -> None:
        assert sent(book, "benefits.exit.eligible") == {
            "exit_eligible inbox county_office:411302",
            "exit_eligible email county_office:411302",
        }
        assert sent(book, "schedule.recheck_due") == {
            "recheck_due inbox county_office:411302",
            "recheck_due email county_office:411302",
        }

    def test_an_event_without_rules_causes_nothing(self, book: RuleBook) -> None:
        empty = Occurrence("registry.household.changed", "c", "hh", "411302", {}, "2026-11-23")
        assert intents(book, empty) == []

    def test_every_intent_carries_its_cause_for_dedupe(self, book: RuleBook) -> None:
        found = intents(book, occurrence("benefits.exit.eligible"))
        assert {i.cause for i in found} == {"cause-1"}


class TestRuleFile:
    def test_a_recipient_no_listed_channel_can_reach_is_refused(self) -> None:
        raw = {"events": {"x.y": [{"template": "t", "to": "household", "channels": ["email"]}]}}
        with pytest.raises(InvalidRules, match="household cannot be reached"):
            load_rulebook(raw)

    def test_an_unknown_recipient_is_refused(self) -> None:
        raw = {"events": {"x.y": [{"template": "t", "to": "mayor", "channels": ["inbox"]}]}}
        with pytest.raises(InvalidRules, match="unknown recipient"):
            load_rulebook(raw)

    def test_short_types_drop_the_prefix_and_version(self) -> None:
        assert short_type("cn.bangfu.benefits.exit.eligible.v1") == "benefits.exit.eligible"
        assert short_type("schedule.visit_due") == "schedule.visit_due"

    def test_amounts_read_in_yuan(self) -> None:
        assert [yuan(63000), yuan(5), yuan(-120)] == ["630.00", "0.05", "-1.20"]
