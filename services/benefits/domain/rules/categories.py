"""Eligibility: the categories of §1 (对象), each a rule over columns."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from enum import StrEnum

import numpy as np

from services.benefits.domain.facts import I64, Bools, Columns
from services.benefits.domain.rules.base import Params, any_member


class Category(StrEnum):
    TEKUN = "tekun"  # 城镇特困供养
    DIBAO = "dibao"  # 低保
    DIBAO_EDGE = "dibao_edge"  # 低保边缘
    EXPENDITURE = "expenditure"  # 支出型 / 意外灾害
    MIGRANT_WORKER = "migrant_worker"  # 进城务工人员
    LAYOFF = "layoff"  # 供给侧结构性改革下岗失业


CATEGORY_NAMES = {
    Category.TEKUN: "城镇特困供养",
    Category.DIBAO: "低保困难家庭",
    Category.DIBAO_EDGE: "低保边缘户",
    Category.EXPENDITURE: "支出型(意外灾害)困难家庭",
    Category.MIGRANT_WORKER: "进城务工人员困难家庭",
    Category.LAYOFF: "供给侧结构性改革下岗失业职工",
}

# The parameter whose clause a category cites: the region's own document (or a labelled
# default), resolved like any value, so that no rule names a document.
CATEGORY_BASIS = {c: f"basis.category.{c.value}" for c in Category}

ELIGIBILITY_KEYS = (
    "dibao.standard_fen",
    "edge.multiple_permille",
    "expenditure.multiple_permille",
    "expenditure.min_spending_fen",
    "migrant.min_contract_months",
    "eligibility.urban_hukou_required",
)


class Tests:
    """The conditions behind each category, each computed when first asked for (a rule that
    needs only 低保 never pays for the member scans of the others); a refusal names the one
    that failed."""

    def __init__(self, cols: Columns, p: Params):
        self.cols = cols
        self.p = p

    @functools.cached_property
    def std_total(self) -> I64:
        """The standard times the household's size: per-capita rules without a division."""
        return self.p["dibao.standard_fen"] * self.cols.size

    @functools.cached_property
    def urban_ok(self) -> Bools:
        free = self.p.spread(self.p.per_region["eligibility.urban_hukou_required"] == 0)
        ok: Bools = free | self.cols.urban_hukou
        return ok

    @functools.cached_property
    def has_standard(self) -> Bools:
        return self.p.has("dibao.standard_fen")

    @functools.cached_property
    def below(self) -> Bools:
        """income < standard × size: per-capita income below the standard."""
        below: Bools = self.cols.income < self.std_total
        if not self.p.everywhere("dibao.standard_fen"):
            below &= self.has_standard
        return below

    @functools.cached_property
    def within_edge(self) -> Bools:
        """income ≤ edge multiple × standard × size."""
        limit = self.p["edge.multiple_permille"] * self.std_total
        return self.has_standard & (self.cols.income * 1000 <= limit)

    @functools.cached_property
    def within_expenditure(self) -> Bools:
        """income ≤ 3 × standard × size (inclusive: 以内(含))."""
        limit = self.p["expenditure.multiple_permille"] * self.std_total
        return self.has_standard & (self.cols.income * 1000 <= limit)

    @functools.cached_property
    def large_spending(self) -> Bools:
        spent = self.cols.sudden_spending
        floor = self.p["expenditure.min_spending_fen"]
        return self.p.has("expenditure.min_spending_fen") & (spent >= floor) & (spent > 0)

    @functools.cached_property
    def migrant_member(self) -> Bools:
        """A rural-hukou union member with a long enough labour contract."""
        cols = self.cols
        union = np.flatnonzero(cols.m_rural & cols.m_union)
        months = self.p["migrant.min_contract_months"][cols.m_household[union]]
        return any_member(cols, union[cols.m_contract_months[union] >= months])

    @functools.cached_property
    def layoff_member(self) -> Bools:
        return any_member(self.cols, np.flatnonzero(self.cols.m_layoff))


def tekun(cols: Columns, t: Tests) -> Bools:
    """城镇特困供养: certified by 民政."""
    return t.urban_ok & cols.tekun


def dibao(cols: Columns, t: Tests) -> Bools:
    """低保: per-capita income below the standard, assets within limits."""
    return t.urban_ok & t.below & cols.assets_ok


def dibao_edge(cols: Columns, t: Tests) -> Bools:
    """低保边缘: at or slightly above the standard (within the multiple), with hardship."""
    return t.urban_ok & ~t.below & t.within_edge & cols.hardship


def expenditure(cols: Columns, t: Tests) -> Bools:
    """支出型/意外灾害: within 3 × the standard, with large sudden spending."""
    return t.urban_ok & t.within_expenditure & t.large_spending


def migrant_worker(cols: Columns, t: Tests) -> Bools:
    """进城务工人员 meeting 低保, 边缘 or 支出型, unless on the rural poverty roster."""
    meets = (t.below & cols.assets_ok) | (~t.below & t.within_edge & cols.hardship)
    meets |= t.within_expenditure & t.large_spending
    return t.urban_ok & t.migrant_member & ~cols.rural_roster & meets


def layoff(cols: Columns, t: Tests) -> Bools:
    """供给侧结构性改革 下岗失业."""
    return t.urban_ok & t.layoff_member


CATEGORY_RULES: dict[Category, Callable[[Columns, Tests], Bools]] = {
    Category.TEKUN: tekun,
    Category.DIBAO: dibao,
    Category.DIBAO_EDGE: dibao_edge,
    Category.EXPENDITURE: expenditure,
    Category.MIGRANT_WORKER: migrant_worker,
    Category.LAYOFF: layoff,
}


class Categories(Mapping[Category, Bools]):
    """Which categories apply to each household, each computed when first asked for."""

    def __init__(self, cols: Columns, p: Params):
        self.cols = cols
        self.tests = Tests(cols, p)
        self._done: dict[Category, Bools] = {}

    def __getitem__(self, category: Category) -> Bools:
        if category not in self._done:
            self._done[category] = CATEGORY_RULES[category](self.cols, self.tests)
        return self._done[category]

    def __iter__(self) -> Iterator[Category]:
        return iter(Category)

    def __len__(self) -> int:
        return len(Category)

    @functools.cached_property
    def oldest(self) -> I64:
        """Each household's oldest member's age (read by two measures: computed once)."""
        oldest: I64 = np.maximum.reduceat(self.cols.m_age, self.cols.starts)
        return oldest

    @functools.cached_property
    def enrolled_members(self) -> Bools:
        """Members of enrolled households."""
        return self.enrolled[self.cols.m_household]

    @functools.cached_property
    def enrolled(self) -> Bools:
        """In any category: a 城镇困难职工/居民 household the measures are for."""
        out = np.zeros(self.cols.households, dtype=np.bool_)
        for category in Category:
            out |= self[category]
        return out
