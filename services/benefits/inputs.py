"""A registry file (GET /v1/households/{id} and its declarations) as the rules' inputs.

The registry keeps the current education stage, not the day it began: a stage is taken to have
begun on the last 1 September, so school-year rules (中职一、二年级, 大学新生) see year 1.
Declared income is the newest month's income items (items without a month count as monthly).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from services.benefits.schemas import HouseholdIn, PersonIn, SchoolingIn

HARDSHIP_CAUSES = {"illness", "disability", "education", "disaster", "unemployment"}


def _school_start(on: date) -> date:
    return date(on.year if on.month >= 9 else on.year - 1, 9, 1)


def declared_income(items: Sequence[Mapping[str, Any]]) -> int:
    incomes = [i for i in items if i["kind"] == "income"]
    months = sorted({i["month"] for i in incomes if i["month"]})
    latest = months[-1] if months else None
    return sum(i["amount_fen"] for i in incomes if i["month"] in (latest, None))


def from_registry(
    file: Mapping[str, Any], declarations: Sequence[Mapping[str, Any]], *, on: date
) -> HouseholdIn:
    members = []
    for m in file["members"]:
        stage = m["education_stage"]
        members.append(
            PersonIn(
                birth_date=date.fromisoformat(str(m["birth_date"])),
                urban_hukou=m["hukou_type"] == "urban",
                union_member=bool(m["union_member"]),
                labour_contract_months=m["labour_contract_months"] or 0,
                supply_side_layoff=m["employment"] == "laid_off" and file["category"] == "layoff",
                disability_grade=m["health"]["disability_grade"] or 0,
                major_illness=bool(m["health"]["major_illness"]),
                chronic_illness=bool(m["health"]["chronic_illness"]),
                schooling=[
                    SchoolingIn(stage=stage, start=_school_start(on), boarding=m["boarding"])
                ]
                if stage != "none"
                else [],
            )
        )
    ill = any(p.major_illness or p.chronic_illness for p in members)
    return HouseholdIn(
        household_id=file["id"],
        region=file["location"]["region"],
        members=members,
        declared_income_fen=declared_income(declarations),
        urban_hukou=file["hukou_type"] == "urban",
        tekun_certified=file["category"] == "tekun",
        rural_poverty_roster="rural_poverty_roster" in file["flags"],
        hardship=ill or bool(HARDSHIP_CAUSES & set(file["causes"])),
    )
