"""A registry file read as the rules' inputs."""

from __future__ import annotations

from datetime import date
from typing import Any

from services.benefits.inputs import declared_income, from_registry


def member(**overrides: Any) -> dict[str, Any]:
    return {
        "birth_date": "1980-05-17",
        "hukou_type": "urban",
        "union_member": False,
        "labour_contract_months": None,
        "employment": "unemployed",
        "health": {"major_illness": False, "chronic_illness": False, "disability_grade": None},
        "education_stage": "none",
        "boarding": False,
        **overrides,
    }


def registry_file(**overrides: Any) -> dict[str, Any]:
    return {
        "id": "h1",
        "location": {"region": "411302"},
        "hukou_type": "urban",
        "category": "dibao",
        "flags": [],
        "causes": ["other"],
        "members": [member()],
        **overrides,
    }


def item(kind: str, month: str | None, fen: int) -> dict[str, Any]:
    return {"kind": kind, "item": "wages", "month": month, "amount_fen": fen}


class TestFromRegistry:
    def test_declared_income_is_the_newest_months_income_items(self) -> None:
        items = [
            item("income", "2026-09", 50000),
            item("income", "2026-10", 60000),
            item("income", "2026-10", 5000),
            item("income", None, 1000),  # monthly, whatever the month
            item("asset", "2026-10", 9_000_000),
        ]
        assert declared_income(items) == 66000

    def test_circumstances_map_to_the_rules_inputs(self) -> None:
        file = registry_file(
            category="layoff",
            flags=["rural_poverty_roster"],
            members=[
                member(employment="laid_off", union_member=True, labour_contract_months=24),
                member(
                    birth_date="2012-03-01",
                    education_stage="junior_high",
                    boarding=True,
                    health={"major_illness": False, "chronic_illness": True, "disability_grade": 2},
                ),
            ],
        )
        got = from_registry(file, [], on=date(2026, 11, 23))
        head, child = got.members
        assert (got.household_id, got.region, got.declared_income_fen) == ("h1", "411302", 0)
        assert got.rural_poverty_roster and not got.tekun_certified
        assert got.hardship  # a chronic illness in the household
        assert head.supply_side_layoff and head.union_member and head.labour_contract_months == 24
        assert child.disability_grade == 2
        assert [(s.stage, s.start, s.boarding) for s in child.schooling] == [
            ("junior_high", date(2026, 9, 1), True)
        ]

    def test_a_cause_of_hardship_counts_and_other_does_not(self) -> None:
        on = date(2026, 3, 1)
        assert from_registry(registry_file(causes=["education"]), [], on=on).hardship
        assert not from_registry(registry_file(causes=["other"]), [], on=on).hardship
        assert from_registry(registry_file(category="tekun"), [], on=on).tekun_certified
