"""What the rules need to know about a household, and its columns (one row per household/member).

The rules read columns only (numpy arrays), so one household is a batch of length 1 and a city is
a batch of a million: the same rule code serves both. `columns()` turns household facts into
columns as of a date (ages, school years and the stage in force move with the date).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import date
from enum import IntEnum

import numpy as np
from numpy.typing import NDArray

I64 = NDArray[np.int64]
Bools = NDArray[np.bool_]


class Stage(IntEnum):
    """Education stage, as the registry names it (`EducationStage`)."""

    NONE = 0
    PRESCHOOL = 1
    PRIMARY = 2
    JUNIOR_HIGH = 3
    SENIOR_HIGH = 4
    SECONDARY_VOCATIONAL = 5
    COLLEGE = 6


STAGE_NAMES = {
    "none": Stage.NONE,
    "preschool": Stage.PRESCHOOL,
    "primary": Stage.PRIMARY,
    "junior_high": Stage.JUNIOR_HIGH,
    "senior_high": Stage.SENIOR_HIGH,
    "secondary_vocational": Stage.SECONDARY_VOCATIONAL,
    "college": Stage.COLLEGE,
}


@dataclass(frozen=True)
class Schooling:
    """A stage a member entered on `start` (school year 1 begins then), boarding or not."""

    stage: Stage
    start: date
    boarding: bool = False


@dataclass(frozen=True)
class Person:
    birth_date: date
    urban_hukou: bool = True
    union_member: bool = False
    labour_contract_months: int = 0
    supply_side_layoff: bool = False  # 供给侧结构性改革 下岗失业
    disability_grade: int = 0  # 0 none, 1 (most severe) to 4
    major_illness: bool = False
    chronic_illness: bool = False
    orphan: bool = False  # 孤儿 / 事实无人抚养
    schooling: tuple[Schooling, ...] = ()  # dated stages; the last started on or before the day
    graduation_year: int | None = None  # 高校毕业年度
    business_started_on: date | None = None  # 首次自主创业 (licence date)
    medical_self_paid_fen: int = 0  # the year's in-policy self-paid medical costs


@dataclass(frozen=True)
class Income:
    """The income a decision used: verified (核对报告) wins over declared."""

    household_fen: int  # per month, the whole household
    source: str  # "verified" or "declared"
    report_version: int | None = None


@dataclass(frozen=True)
class Household:
    household_id: str
    region: str
    members: tuple[Person, ...]
    declared_income_fen: int  # per month, the whole household, as declared
    verified_per_capita_income_fen: int | None = None
    verification_report_version: int | None = None
    urban_hukou: bool = True
    assets_within_limits: bool = True
    tekun_certified: bool = False  # 特困供养, certified by 民政
    rural_poverty_roster: bool = False  # 农村建档立卡
    hardship: bool = False  # illness, a child at university, unemployment or accident
    sudden_spending_fen: int = 0  # 突发大额支出(损失) in the last twelve months
    no_housing: bool = False  # 无房, waiting for public housing
    dibao_since: date | None = None  # the day 城市低保 began without a break, as 民政 certifies
    causes: frozenset[str] = field(default_factory=frozenset)

    def income(self) -> Income:
        if self.verified_per_capita_income_fen is not None:
            return Income(
                self.verified_per_capita_income_fen * len(self.members),
                "verified",
                self.verification_report_version,
            )
        return Income(self.declared_income_fen, "declared")


@dataclass
class Columns:
    """Households (H rows) and their members (M rows, grouped by household, in order)."""

    region: NDArray[np.int32]  # index into `regions`
    regions: list[str]
    size: I64  # members
    income: I64  # household income per month, fen
    urban_hukou: Bools
    assets_ok: Bools
    tekun: Bools
    rural_roster: Bools
    hardship: Bools
    sudden_spending: I64
    no_housing: Bools
    dibao_months: I64  # whole months on 城市低保 without a break; -1: not on it
    starts: I64  # first member row of each household
    m_household: I64
    m_age: I64
    m_stage: I64
    m_school_year: I64  # 1 in the year the stage started; 0 for none
    m_boarding: Bools
    m_disability: I64
    m_orphan: Bools
    m_rural: Bools
    m_union: Bools
    m_contract_months: I64
    m_layoff: Bools
    m_graduating: Bools
    m_business_months: I64  # -1: no business
    m_medical: I64

    @property
    def households(self) -> int:
        return len(self.size)


def age_on(birth: date, day: date) -> int:
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def months_between(start: date, day: date) -> int:
    """Whole months from `start` to `day` (negative before it)."""
    return (day.year - start.year) * 12 + day.month - start.month - (day.day < start.day)


def schooling_on(person: Person, day: date) -> tuple[Stage, int, bool]:
    """(stage, school year, boarding) in force on `day`."""
    current = [s for s in person.schooling if s.start <= day]
    if not current:
        return Stage.NONE, 0, False
    s = max(current, key=lambda s: s.start)
    return s.stage, age_on(s.start, day) + 1, s.boarding


def columns(households: Sequence[Household], *, on: date) -> Columns:
    """Columns of `households` as of `on` (the one-household path passes a list of one)."""
    regions = sorted({h.region for h in households})
    index = {r: i for i, r in enumerate(regions)}
    people = [(i, p) for i, h in enumerate(households) for p in h.members]
    sizes = np.array([len(h.members) for h in households], dtype=np.int64)
    schooling = [schooling_on(p, on) for _, p in people]

    def h_bool(values: Sequence[bool]) -> Bools:
        return np.array(values, dtype=np.bool_)

    def m_int(values: Sequence[int]) -> I64:
        return np.array(values, dtype=np.int64)

    return Columns(
        region=np.array([index[h.region] for h in households], dtype=np.int32),
        regions=regions,
        size=sizes,
        income=np.array([h.income().household_fen for h in households], dtype=np.int64),
        urban_hukou=h_bool([h.urban_hukou for h in households]),
        assets_ok=h_bool([h.assets_within_limits for h in households]),
        tekun=h_bool([h.tekun_certified for h in households]),
        rural_roster=h_bool([h.rural_poverty_roster for h in households]),
        hardship=h_bool([h.hardship for h in households]),
        sudden_spending=np.array([h.sudden_spending_fen for h in households], dtype=np.int64),
        no_housing=h_bool([h.no_housing for h in households]),
        dibao_months=np.array(
            [months_between(h.dibao_since, on) if h.dibao_since else -1 for h in households],
            dtype=np.int64,
        ),
        starts=np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64),
        m_household=m_int([i for i, _ in people]),
        m_age=m_int([age_on(p.birth_date, on) for _, p in people]),
        m_stage=m_int([int(s[0]) for s in schooling]),
        m_school_year=m_int([s[1] for s in schooling]),
        m_boarding=h_bool([s[2] for s in schooling]),
        m_disability=m_int([p.disability_grade for _, p in people]),
        m_orphan=h_bool([p.orphan for _, p in people]),
        m_rural=h_bool([not p.urban_hukou for _, p in people]),
        m_union=h_bool([p.union_member for _, p in people]),
        m_contract_months=m_int([p.labour_contract_months for _, p in people]),
        m_layoff=h_bool([p.supply_side_layoff for _, p in people]),
        m_graduating=h_bool([p.graduation_year == on.year for _, p in people]),
        m_business_months=m_int(
            [
                months_between(p.business_started_on, on) if p.business_started_on else -1
                for _, p in people
            ]
        ),
        m_medical=m_int([p.medical_self_paid_fen for _, p in people]),
    )


def subset(cols: Columns, households: Bools) -> Columns:
    """The columns of the households where `households` holds (and of their members)."""
    # Row numbers, not masks: taking a third of 2.6 M rows by index beats masking them all.
    rows = np.flatnonzero(households)
    members = np.flatnonzero(households[cols.m_household])
    size = cols.size[rows]
    starts = np.zeros(len(size), dtype=np.int64)
    starts[1:] = np.cumsum(size)[:-1]
    picked: dict[str, object] = {}
    for f in fields(Columns):
        value = getattr(cols, f.name)
        if f.name == "regions":
            picked[f.name] = value
        elif f.name.startswith("m_"):
            picked[f.name] = value.take(members)
        else:
            picked[f.name] = value.take(rows)
    picked.update(
        size=size,
        starts=starts,
        m_household=np.repeat(np.arange(len(size), dtype=np.int64), size),
    )
    return Columns(**picked)  # type: ignore[arg-type]
