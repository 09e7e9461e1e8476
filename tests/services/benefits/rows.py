"""Household builders shared by the benefits tests."""

from __future__ import annotations

import random
from datetime import date
from typing import Any

from services.benefits.domain.facts import Household, Person, Schooling, Stage


def person(age: int = 40, *, on: date = date(2025, 3, 1), **overrides: Any) -> Person:
    """A member who is `age` on `on` (born the day before, `age` years earlier)."""
    return Person(birth_date=date(on.year - age, 1, 1), **overrides)


def household(
    region: str = "411302", income: int = 0, members: int = 1, **overrides: Any
) -> Household:
    people = overrides.pop("people", None) or tuple(person() for _ in range(members))
    return Household(
        household_id="h",
        region=region,
        members=tuple(people),
        declared_income_fen=income,
        **overrides,
    )


# Every seed region: 南阳's counties, 封丘, 秦皇岛, 鄂托克旗 and the placeholder city (900100).
REGIONS = ["411302", "411303", "411321", "411381", "410727", "130302", "150624", "900100"]


def random_household(rng: random.Random, index: int) -> Household:
    """A household with every input varied, boundaries included, for the agreement tests."""
    size = rng.choice([1, 1, 2, 3, 3, 4, 5])
    people = []
    for _ in range(size):
        stage = rng.choice(list(Stage))
        start = date(rng.randint(2019, 2025), 9, 1)
        people.append(
            Person(
                birth_date=date(rng.randint(1940, 2022), rng.randint(1, 12), rng.randint(1, 28)),
                urban_hukou=rng.random() < 0.8,
                union_member=rng.random() < 0.3,
                labour_contract_months=rng.choice([0, 11, 12, 36]),
                supply_side_layoff=rng.random() < 0.05,
                disability_grade=rng.choice([0, 0, 0, 1, 3]),
                orphan=rng.random() < 0.05,
                schooling=(Schooling(stage, start, rng.random() < 0.5),) if stage else (),
                graduation_year=rng.choice([None, 2024, 2025]),
                business_started_on=rng.choice([None, date(2024, 3, 1), date(2024, 3, 2)]),
                medical_self_paid_fen=rng.choice([0, 1_200_000, 1_200_100, 2_866_667, 5_000_000]),
            )
        )
    standard_ish = rng.choice([50000, 55000, 60000, 62000, 63000, 65000, 70000])
    income = rng.choice(
        [
            0,
            standard_ish * size - 1,
            standard_ish * size,
            standard_ish * size * 3,
            rng.randint(0, 400_000),
        ]
    )
    verified = rng.choice([None, None, rng.randint(0, 100_000)])
    return Household(
        household_id=f"h{index}",
        region=rng.choice(REGIONS),
        members=tuple(people),
        declared_income_fen=income,
        verified_per_capita_income_fen=verified,
        urban_hukou=rng.random() < 0.9,
        assets_within_limits=rng.random() < 0.9,
        tekun_certified=rng.random() < 0.05,
        rural_poverty_roster=rng.random() < 0.05,
        hardship=rng.random() < 0.5,
        sudden_spending_fen=rng.choice([0, 999_999, 1_000_000, 3_000_000]),
        no_housing=rng.random() < 0.3,
        # 12 months, 11 months and 29 months on 低保 by 2025-03-01, or none.
        dibao_since=rng.choice([None, date(2024, 3, 1), date(2024, 3, 2), date(2022, 10, 1)]),
    )
