"""低保金 and the 6-month 脱困 rule as a small OpenFisca country package, written the careful way.

Careful means: every formula is vectorised over entities; the region's parameters are read once
per period into a small array indexed by the household's region number (no Enum indexing, no
per-entity Python); money is integer fen (`value_type = int`), not OpenFisca's float32.
It runs in the bench's own environment (`.bangfu/bench-openfisca`), never in the project's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from openfisca_core.entities import build_entity
from openfisca_core.periods import MONTH
from openfisca_core.taxbenefitsystems import TaxBenefitSystem
from openfisca_core.variables import Variable

# The regions of the bench, in the order of the bench's region numbers.
REGIONS = ["411302", "411303", "411321", "411381", "410727", "130302"]
ROUNDINGS = ["fen", "up_yuan", "down_yuan", "half_up_yuan"]

Person = build_entity(key="person", plural="persons", label="A person", is_person=True)
Household = build_entity(
    key="household",
    plural="households",
    label="A household",
    roles=[{"key": "member", "plural": "members", "label": "Member"}],
)


def _by_region(parameters: Any, period: Any, name: str) -> np.ndarray:
    """One parameter for every bench region, as an array indexed by region number."""
    node = getattr(parameters(period).dibao, name)
    return np.array([node["r" + code] for code in REGIONS])


class region_number(Variable):
    value_type = int
    entity = Household
    definition_period = MONTH
    label = "Index of the household's region in REGIONS"


class household_size(Variable):
    value_type = int
    entity = Household
    definition_period = MONTH
    label = "Members"


class household_income(Variable):
    value_type = int
    entity = Household
    definition_period = MONTH
    label = "Household income of the month, fen"


class assets_within_limits(Variable):
    value_type = bool
    default_value = True
    entity = Household
    definition_period = MONTH
    label = "Assets within the 低保 limits"


class urban_hukou(Variable):
    value_type = bool
    default_value = True
    entity = Household
    definition_period = MONTH
    label = "Urban household registration"


class dibao_standard(Variable):
    value_type = int
    entity = Household
    definition_period = MONTH
    label = "城市低保标准 in force on the first day of the month, fen per person"

    def formula(household, period, parameters):  # type: ignore[no-untyped-def]
        return _by_region(parameters, period.start, "standard")[household("region_number", period)]


class dibao_eligible(Variable):
    value_type = bool
    entity = Household
    definition_period = MONTH
    label = "低保: per-capita income below the standard, assets within limits, hukou if required"

    def formula(household, period, parameters):  # type: ignore[no-untyped-def]
        region = household("region_number", period)
        required = _by_region(parameters, period.start, "urban_hukou_required")[region]
        below = household("household_income", period) < household(
            "dibao_standard", period
        ) * household("household_size", period)
        urban_ok = (~required.astype(bool)) | household("urban_hukou", period)
        return below & household("assets_within_limits", period) & urban_ok


class dibao_allowance(Variable):
    value_type = int
    entity = Household
    definition_period = MONTH
    label = "低保金 = 低保标准 × 人数 − 家庭收入, rounded by the region's rule, fen"

    def formula(household, period, parameters):  # type: ignore[no-untyped-def]
        rounding = _by_region(parameters, period.start, "rounding")[
            household("region_number", period)
        ]
        gap = household("dibao_standard", period) * household("household_size", period) - household(
            "household_income", period
        )
        gap = np.maximum(gap, 0)
        rounded = np.select(
            [rounding == 1, rounding == 2, rounding == 3],
            [(gap + 99) // 100 * 100, gap // 100 * 100, (gap + 50) // 100 * 100],
            gap,
        )
        return np.where(household("dibao_eligible", period), rounded, 0)


class income_above_standard(Variable):
    value_type = bool
    entity = Household
    definition_period = MONTH
    label = "Per-capita income above the standard this month"

    def formula(household, period, parameters):  # type: ignore[no-untyped-def]
        return household("household_income", period) > household(
            "dibao_standard", period
        ) * household("household_size", period)


class months_above_standard(Variable):
    value_type = int
    entity = Household
    definition_period = MONTH
    label = "Consecutive months, up to this one, above the standard (at most 6)"

    def formula(household, period, parameters):  # type: ignore[no-untyped-def]
        run = np.ones(household.count, dtype=bool)
        count = np.zeros(household.count, dtype=np.int64)
        for back in range(6):  # a loop over months, never over households
            run = run & household("income_above_standard", period.offset(-back, "month"))
            count += run
        return count


class exit_eligible(Variable):
    value_type = bool
    entity = Household
    definition_period = MONTH
    label = "脱困 by income: six consecutive months above the standard"

    def formula(household, period, parameters):  # type: ignore[no-untyped-def]
        return household("months_above_standard", period) >= 6


class BenefitsTaxBenefitSystem(TaxBenefitSystem):
    def __init__(self) -> None:
        super().__init__([Person, Household])
        self.load_parameters(str(Path(__file__).parent / "parameters"))
        for variable in (
            region_number,
            household_size,
            household_income,
            assets_within_limits,
            urban_hukou,
            dibao_standard,
            dibao_eligible,
            dibao_allowance,
            income_above_standard,
            months_above_standard,
            exit_eligible,
        ):
            self.add_variable(variable)
