"""The departments' data, pure: deterministic, mostly low-income, consistent across departments."""

from __future__ import annotations

from datetime import date
from typing import Any

from sandbox.departments import DEPARTMENTS
from sandbox.people import Change, Person, person_of
from shared.identity import parse_identity_number
from tests.helpers import identity_number

TODAY = date(2025, 8, 15)


def person(number: str, *, as_of: date = TODAY, changes: tuple[Change, ...] = ()) -> Person:
    return person_of(parse_identity_number(number, today=TODAY), as_of=as_of, changes=changes)


def answers(number: str, **kwargs: Any) -> dict[str, dict[str, Any]]:
    subject = person(number, **kwargs)
    return {code: department.render(subject) for code, department in DEPARTMENTS.items()}


def population(count: int = 400) -> list[dict[str, dict[str, Any]]]:
    return [
        answers(identity_number(birth=date(1940 + i % 66, 1 + i % 12, 1 + i % 28), serial=i))
        for i in range(count)
    ]


def flags(person_answers: dict[str, dict[str, Any]]) -> set[str]:
    """What a verification would question: an income or an asset beyond a low-income household."""
    a = person_answers
    found = set()
    if a["tax"]["total_taxable_income_fen"]:
        found.add("taxable income")
    if a["real_estate"]["property_count"] >= 2:
        found.add("second property")
    if any(v["kind"] == "small_car" for v in a["vehicle"]["vehicles"]):
        found.add("car")
    if a["market"]["registrations"]:
        found.add("business")
    if sum(a["finance"]["totals"].values()) > 5_000_000:
        found.add("financial assets over 50,000 yuan")
    return found


def integers_only(value: Any, path: str = "") -> list[str]:
    """The paths of `*_fen` fields that are not integers."""
    if isinstance(value, dict):
        return [bad for k, v in value.items() for bad in integers_only(v, f"{path}.{k}")] + [
            f"{path}.{k}" for k, v in value.items() if k.endswith("_fen") and type(v) is not int
        ]
    if isinstance(value, list):
        return [bad for i, v in enumerate(value) for bad in integers_only(v, f"{path}[{i}]")]
    return []


class TestDeterminism:
    def test_the_same_number_gives_the_same_answers(self) -> None:
        number = identity_number(serial=41)
        assert answers(number) == answers(number)

    def test_every_amount_is_integer_fen(self) -> None:
        for person_answers in population(100):
            assert integers_only(person_answers) == []


class TestPopulation:
    def test_most_people_look_like_low_income_households(self) -> None:
        people = population()
        clean = [p for p in people if not flags(p)]
        assert len(clean) >= 0.65 * len(people)

    def test_a_minority_has_something_a_verification_flags(self) -> None:
        people = population()
        found = [flags(p) for p in people]
        assert 0.1 * len(people) <= sum(1 for f in found if f) <= 0.35 * len(people)
        every_kind = set().union(*found)
        assert every_kind == {
            "taxable income",
            "second property",
            "car",
            "business",
            "financial assets over 50,000 yuan",
        }

    def test_the_wage_agrees_across_tax_social_insurance_and_housing_fund(self) -> None:
        for a in population():
            base = a["social_insurance"]["contributions"]["monthly_wage_base_fen"]
            if not base:
                continue
            wages = [
                item["taxable_income_fen"]
                for month in a["tax"]["months"]
                for item in month["items"]
                if item["kind"] == "wage"
            ]
            assert wages and wages[-1] == base
            fund = a["housing_fund"]["monthly_deposit_base_fen"]
            assert fund in (0, base)


class TestAsOf:
    def test_a_registration_after_as_of_is_not_yet_known(self) -> None:
        number = identity_number(serial=52)
        registered = (Change("property_registered", date(2025, 3, 1)),)
        before = answers(number, as_of=date(2025, 2, 28), changes=registered)["real_estate"]
        after = answers(number, as_of=date(2025, 3, 1), changes=registered)["real_estate"]
        assert after["property_count"] == before["property_count"] + 1

    def test_a_pension_starts_at_sixty(self) -> None:
        numbers = [identity_number(birth=date(1960, 6, 1), serial=s) for s in range(20)]
        pensioners = [
            n for n in numbers if answers(n, as_of=date(2020, 6, 1))["social_insurance"]["pension"]
        ]
        assert pensioners
        for number in pensioners:
            pension = answers(number, as_of=date(2020, 6, 1))["social_insurance"]["pension"]
            assert pension["since"] == "2020-06-01"
            assert answers(number, as_of=date(2020, 5, 31))["social_insurance"]["pension"] is None
