"""Deterministic people: what the departments know of a person, derived from the identity number.

Person-level facts (a wage, a car, a marriage) come from a hash of the number alone, so that the
departments agree with one another: the tax office sees the wage the social-insurance office
bases contributions on. Each department then draws its own details from (department, number).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from functools import lru_cache
from typing import Literal, TypeVar

from shared.identity import IdentityNumber, mask_identity_number

T = TypeVar("T")

# Drawn dates lie before this day, so that an answer does not change with the calendar.
REFERENCE_DATE = date(2025, 6, 30)

MaritalStatus = Literal["unmarried", "married", "divorced", "widowed"]
PensionScheme = Literal["none", "resident", "employee"]
ChangeKind = Literal["death", "marriage", "property_registered", "vehicle_registered"]


class Draw:
    """Named pseudo-random values from a key: the same key and name, the same value."""

    def __init__(self, *parts: str) -> None:
        self._key = "|".join(parts)

    def fraction(self, name: str) -> float:
        """A value in [0, 1)."""
        digest = hashlib.sha256(f"{self._key}|{name}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    def chance(self, name: str, probability: float) -> bool:
        return self.fraction(name) < probability

    def integer(self, name: str, low: int, high: int) -> int:
        """An integer in [low, high]."""
        return low + int(self.fraction(name) * (high - low + 1))

    def choice(self, name: str, options: Sequence[T]) -> T:
        return options[int(self.fraction(name) * len(options))]

    def day(self, name: str, start: date, end: date) -> date:
        """A day in [start, end]."""
        return start + timedelta(days=self.integer(name, 0, max(0, (end - start).days)))

    def digits(self, name: str, count: int) -> str:
        return f"{self.integer(name, 0, 10**count - 1):0{count}d}"


@dataclass(frozen=True)
class Change:
    """A change a department published (through the admin endpoint) about one person."""

    kind: ChangeKind
    effective_date: date


@dataclass(frozen=True)
class Profile:
    """What the departments together know of one person; most are low-income, a few are not.

    Dates are fixed by the number alone; `Person` shows what had happened by its `as_of`.
    """

    monthly_wage_fen: int
    employer: str | None
    employed_since: date | None
    pension: PensionScheme
    monthly_pension_fen: int
    unemployment_benefit_fen: int
    marriage_date: date | None
    divorce_date: date | None
    widowed: bool
    death_date: date | None
    homes: int
    second_properties: int
    cars: int
    small_vehicles: int
    business: Literal["none", "individual", "company"]
    wealthy: bool
    disability_grade: int | None
    serious_illness: bool
    added_properties: tuple[date, ...] = ()
    added_vehicles: tuple[date, ...] = ()


@dataclass(frozen=True)
class Person:
    """The person a query is about, seen on `as_of`."""

    number: str
    birth_date: date
    sex: Literal["male", "female"]
    as_of: date
    profile: Profile

    @property
    def masked(self) -> str:
        return mask_identity_number(self.number)

    @property
    def region(self) -> str:
        return self.number[:6]

    @property
    def age(self) -> int:
        """Completed years on `as_of`."""
        birthday_passed = (self.as_of.month, self.as_of.day) >= (
            self.birth_date.month,
            self.birth_date.day,
        )
        return self.as_of.year - self.birth_date.year - (0 if birthday_passed else 1)

    def birthday(self, years: int) -> date:
        """The day the person turns `years` (28 February for a 29 February birthday)."""
        return _years_after(self.birth_date, years)

    def adult_day(self, draw: Draw, name: str) -> date:
        """A day between the 20th birthday and the reference date."""
        start = self.birthday(20)
        return draw.day(name, start, max(start, REFERENCE_DATE))

    def known(self, day: date | None) -> bool:
        """Whether something that happens on `day` had happened by `as_of`."""
        return day is not None and day <= self.as_of

    @property
    def snapshot_month(self) -> date:
        """The first day of the last complete month before `as_of` (a monthly snapshot)."""
        return (self.as_of.replace(day=1) - timedelta(days=1)).replace(day=1)

    @property
    def business_since(self) -> date | None:
        """When the person's business was registered (market and tax agree on it)."""
        if self.profile.business == "none":
            return None
        return self.adult_day(Draw("person", self.number), "business_since")

    @property
    def deceased(self) -> bool:
        return self.known(self.profile.death_date)

    @property
    def employed(self) -> bool:
        """In formal employment on `as_of` (everyone retires at 60 here)."""
        return (
            self.profile.monthly_wage_fen > 0
            and self.known(self.profile.employed_since)
            and self.age < 60
        )

    @property
    def wage_fen(self) -> int:
        return self.profile.monthly_wage_fen if self.employed else 0

    @property
    def pension_fen(self) -> int:
        return self.profile.monthly_pension_fen if self.age >= 60 else 0

    @property
    def unemployment_benefit_fen(self) -> int:
        working_age = 18 <= self.age < 60
        return self.profile.unemployment_benefit_fen if working_age and not self.employed else 0

    @property
    def marital_status(self) -> MaritalStatus:
        profile = self.profile
        if not self.known(profile.marriage_date):
            return "unmarried"
        if self.known(profile.divorce_date):
            return "divorced"
        return "widowed" if profile.widowed and self.age >= 60 else "married"


EMPLOYERS = (
    "南阳市宛城区恒达建材有限公司",
    "河南省宛东物流有限公司",
    "南阳市卧龙区鑫源纺织厂",
    "南阳高新区华瑞电子科技有限公司",
    "唐河县丰源食品有限公司",
)


def person_of(identity: IdentityNumber, *, as_of: date, changes: Sequence[Change] = ()) -> Person:
    """The person with this number as the departments see them on `as_of`."""
    profile = _apply(_drawn_profile(identity.number, identity.birth_date), changes)
    return Person(
        number=identity.number,
        birth_date=identity.birth_date,
        sex=identity.sex,
        as_of=as_of,
        profile=profile,
    )


@lru_cache(maxsize=4096)
def _drawn_profile(number: str, birth_date: date) -> Profile:
    """Drawn once per person, not once per department asked: a household's check asks all
    eleven about each member (the draw was a quarter of the sandbox's work per query)."""
    return _profile(Draw("person", number), birth_date)


def _profile(draw: Draw, birth_date: date) -> Profile:
    employed = draw.chance("employed", 0.12)
    pension: PensionScheme = "resident"
    if draw.chance("employee_pension", 0.06):
        pension = "employee"
    elif draw.chance("no_pension", 0.15):
        pension = "none"
    married = not draw.chance("never_married", 0.15)
    married_on = _years_after(birth_date, draw.integer("married_at", 22, 29)) if married else None
    divorced = married_on is not None and draw.chance("divorced", 0.08)
    business_roll = draw.fraction("business")
    return Profile(
        monthly_wage_fen=draw.integer("wage", 2_800, 7_500) * 100 if employed else 0,
        employer=draw.choice("employer", EMPLOYERS) if employed else None,
        employed_since=_years_after(birth_date, draw.integer("hired_at", 18, 35))
        if employed
        else None,
        pension=pension,
        monthly_pension_fen={
            "none": 0,
            "resident": draw.integer("resident_pension", 150, 260) * 100,
            "employee": draw.integer("employee_pension", 2_200, 3_800) * 100,
        }[pension],
        unemployment_benefit_fen=draw.integer("unemployment", 1_500, 1_700) * 100
        if not employed and draw.chance("unemployed", 0.03)
        else 0,
        marriage_date=married_on,
        divorce_date=married_on + timedelta(days=draw.integer("divorced_after", 400, 5_000))
        if divorced and married_on
        else None,
        widowed=not divorced and draw.chance("widowed", 0.2),
        death_date=draw.day("death", date(2022, 7, 1), REFERENCE_DATE)
        if birth_date.year < 1955 and draw.chance("deceased", 0.04)
        else None,
        homes=0 if draw.chance("homeless", 0.12) else 1,
        second_properties=draw.choice("second_properties", (1, 1, 1, 2))
        if draw.chance("second_property", 0.06)
        else 0,
        cars=1 if draw.chance("car", 0.06) else 0,
        small_vehicles=1 if draw.chance("small_vehicle", 0.3) else 0,
        business="company"
        if business_roll < 0.01
        else ("individual" if business_roll < 0.04 else "none"),
        wealthy=draw.chance("wealthy", 0.04),
        disability_grade=draw.integer("disability_grade", 1, 4)
        if draw.chance("disabled", 0.08)
        else None,
        serious_illness=draw.chance("serious_illness", 0.12),
    )


def _years_after(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return date(day.year + years, 2, 28)


def _apply(profile: Profile, changes: Sequence[Change]) -> Profile:
    for change in changes:
        on = change.effective_date
        if change.kind == "death":
            profile = replace(profile, death_date=on)
        elif change.kind == "marriage":
            profile = replace(profile, marriage_date=on, divorce_date=None, widowed=False)
        elif change.kind == "property_registered":
            profile = replace(profile, added_properties=(*profile.added_properties, on))
        else:
            profile = replace(profile, added_vehicles=(*profile.added_vehicles, on))
    return profile
