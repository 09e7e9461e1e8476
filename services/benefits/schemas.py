"""Request and response bodies of the benefits API. Money is integer fen."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from services.benefits.domain.facts import STAGE_NAMES, Household, Person, Schooling

REGION = r"^[0-9]{6}$"
# 100 million yuan: far above any household's figure, and small enough that the rules'
# integer products (income × 1000, standard × size × multiple) stay inside int64.
MAX_FEN = 10_000_000_000
# Text PostgreSQL can store: no NUL character.
TEXT = r"^[^\x00]*$"
StageName = Literal[
    "none", "preschool", "primary", "junior_high", "senior_high", "secondary_vocational", "college"
]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SchoolingIn(_In):
    stage: StageName
    start: date = Field(description="the day the member entered the stage (school year 1)")
    boarding: bool = False


class PersonIn(_In):
    """A member's circumstances as the rules need them (no name, no identity number)."""

    birth_date: date
    urban_hukou: bool = True
    union_member: bool = False
    labour_contract_months: int = Field(0, ge=0, le=600)
    supply_side_layoff: bool = False
    disability_grade: int = Field(0, ge=0, le=4, description="0 none, 1 most severe to 4")
    major_illness: bool = False
    chronic_illness: bool = False
    orphan: bool = False
    schooling: list[SchoolingIn] = Field(default_factory=list, max_length=10)
    graduation_year: int | None = Field(None, ge=1950, le=2100)
    business_started_on: date | None = None
    medical_self_paid_fen: StrictInt = Field(0, ge=0, le=MAX_FEN)


class HouseholdIn(_In):
    """The inputs of a decision; a receipt stores exactly this."""

    household_id: str | None = Field(None, min_length=1, max_length=64, pattern=TEXT)
    region: str = Field(pattern=REGION, description="the household's county (GB/T 2260)")
    members: list[PersonIn] = Field(min_length=1, max_length=30)
    declared_income_fen: StrictInt = Field(
        ge=0, le=MAX_FEN, description="household income per month"
    )
    verified_per_capita_income_fen: StrictInt | None = Field(
        None, ge=0, le=MAX_FEN, description="from the latest 核对报告; wins over the declared"
    )
    verification_report_version: int | None = Field(None, ge=0, le=2**31 - 1)
    urban_hukou: bool = True
    assets_within_limits: bool = True
    tekun_certified: bool = False
    rural_poverty_roster: bool = False
    hardship: bool = False
    sudden_spending_fen: StrictInt = Field(0, ge=0, le=MAX_FEN)
    no_housing: bool = False
    dibao_since: date | None = Field(
        None, description="the day 城市低保 began without a break (民政), for the entry grants"
    )

    def to_domain(self) -> Household:
        return Household(
            household_id=self.household_id or "",
            region=self.region,
            members=tuple(
                Person(
                    birth_date=p.birth_date,
                    urban_hukou=p.urban_hukou,
                    union_member=p.union_member,
                    labour_contract_months=p.labour_contract_months,
                    supply_side_layoff=p.supply_side_layoff,
                    disability_grade=p.disability_grade,
                    major_illness=p.major_illness,
                    chronic_illness=p.chronic_illness,
                    orphan=p.orphan,
                    schooling=tuple(
                        Schooling(STAGE_NAMES[s.stage], s.start, s.boarding) for s in p.schooling
                    ),
                    graduation_year=p.graduation_year,
                    business_started_on=p.business_started_on,
                    medical_self_paid_fen=p.medical_self_paid_fen,
                )
                for p in self.members
            ),
            declared_income_fen=self.declared_income_fen,
            verified_per_capita_income_fen=self.verified_per_capita_income_fen,
            verification_report_version=self.verification_report_version,
            urban_hukou=self.urban_hukou,
            assets_within_limits=self.assets_within_limits,
            tekun_certified=self.tekun_certified,
            rural_poverty_roster=self.rural_poverty_roster,
            hardship=self.hardship,
            sudden_spending_fen=self.sudden_spending_fen,
            no_housing=self.no_housing,
            dibao_since=self.dibao_since,
        )


class ComputeIn(_In):
    household: HouseholdIn
    on: date | None = Field(None, description="the day of the decision (default today)")


class HouseholdPut(_In):
    household: HouseholdIn


class ParameterIn(_In):
    """A dated value of one parameter at one region level, with its source."""

    value: StrictBool | StrictInt | Annotated[StrictStr, Field(pattern=TEXT, max_length=50)]
    effective_from: date
    effective_to: date | None = None
    source: str = Field(
        min_length=1, max_length=300, pattern=TEXT, description="《document title》"
    )
    document: str = Field("", max_length=100, pattern=TEXT, description="its number (文号)")
    clause: str = Field(min_length=1, max_length=200, pattern=TEXT)


class PaymentIn(_In):
    """A payment a department made: what, to whom, for which period, how much."""

    department: str = Field(min_length=1, max_length=100, pattern=TEXT)
    measure: str = Field(min_length=1, max_length=100, pattern=TEXT, description="the need")
    household_id: str = Field(min_length=1, max_length=64, pattern=TEXT)
    region: str = Field(pattern=REGION)
    period: str = Field(pattern=r"^[0-9]{4}(-(0[1-9]|1[0-2]))?$", examples=["2025-03", "2025"])
    amount_fen: StrictInt = Field(gt=0, le=MAX_FEN)
    reference: str | None = Field(
        None, max_length=100, pattern=TEXT, description="the department's own id"
    )


class WhatIfIn(_In):
    """ "If the standard becomes X from D": who changes category, and what it costs."""

    region: str = Field(pattern=REGION, description="the level the new value is set at")
    key: str = Field("dibao.standard_fen", max_length=100)
    value: StrictBool | StrictInt | Annotated[StrictStr, Field(pattern=TEXT, max_length=50)]
    effective_from: date
    until: date | None = Field(None, description="back-pay is owed up to this day")


class Decided(BaseModel):
    decision_id: str
    card: dict[str, Any]
