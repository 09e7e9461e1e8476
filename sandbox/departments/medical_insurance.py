"""医疗保障 (医保局): enrolment and the yearly medical costs the insured paid themselves."""

from __future__ import annotations

from datetime import date

from sandbox.departments.base import Body, Department, yuan
from sandbox.people import Draw, Person


def answer(person: Person) -> Body:
    """Enrolment, and costs for the last full year and the current year to `as_of`."""
    draw = Draw("medical_insurance", person.number)
    enrolled = person.employed or not draw.chance("not_enrolled", 0.04)
    return {
        "enrolled": enrolled,
        "scheme": ("employee" if person.employed else "resident") if enrolled else None,
        "insured_region": person.region if enrolled else None,
        "chronic_disease_certified": enrolled
        and person.profile.serious_illness
        and draw.chance("chronic", 0.5),
        "costs": _costs(person, draw) if enrolled else [],
    }


def _costs(person: Person, draw: Draw) -> list[Body]:
    year = person.as_of.year
    elapsed = (person.as_of - date(year, 1, 1)).days + 1
    return [
        _year(person, draw, year=year - 1, period_end=date(year - 1, 12, 31), share=1.0),
        _year(person, draw, year=year, period_end=person.as_of, share=elapsed / 365),
    ]


def _year(person: Person, draw: Draw, *, year: int, period_end: date, share: float) -> Body:
    """One year's costs; `share` of the year has passed (rounded down to the fen)."""
    if person.profile.serious_illness:
        self_paid = yuan(draw, f"{year}.self_paid", 15_000, 80_000)
        fund_ratio = 1.5 + draw.fraction(f"{year}.fund_ratio") * 1.5
        out_of_policy = yuan(draw, f"{year}.out_of_policy", 2_000, 20_000)
    else:
        self_paid = yuan(draw, f"{year}.self_paid", 0, 2_000)
        fund_ratio = 1.0 + draw.fraction(f"{year}.fund_ratio")
        out_of_policy = yuan(draw, f"{year}.out_of_policy", 0, 500)
    self_paid, out_of_policy = int(self_paid * share), int(out_of_policy * share)
    fund_paid = int(self_paid * fund_ratio)
    return {
        "year": year,
        "period_end": period_end.isoformat(),
        "total_cost_fen": self_paid + fund_paid + out_of_policy,
        "fund_paid_fen": fund_paid,
        "in_policy_self_paid_fen": self_paid,
        "out_of_policy_fen": out_of_policy,
    }


DEPARTMENT = Department(code="medical_insurance", name="医保", holder="医保局", answer=answer)
