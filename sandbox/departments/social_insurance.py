"""社会保险 (人社局): pension received, unemployment benefit, contributions and wage base."""

from __future__ import annotations

from sandbox.departments.base import Body, Department, iso, month
from sandbox.people import Draw, Person


def answer(person: Person) -> Body:
    """The pension and benefit paid monthly, and the contributions of the snapshot month."""
    draw = Draw("social_insurance", person.number)
    return {
        "pension": _pension(person),
        "unemployment_benefit": _unemployment(person, draw),
        "contributions": _contributions(person, draw),
    }


def _pension(person: Person) -> Body | None:
    if not person.pension_fen:
        return None
    return {
        "scheme": person.profile.pension,
        "monthly_amount_fen": person.pension_fen,
        "since": person.birthday(60).isoformat(),
        "status": "stopped" if person.deceased else "paying",
    }


def _unemployment(person: Person, draw: Draw) -> Body | None:
    if not person.unemployment_benefit_fen:
        return None
    return {
        "monthly_amount_fen": person.unemployment_benefit_fen,
        "months_remaining": draw.integer("months_remaining", 1, 12),
    }


def _contributions(person: Person, draw: Draw) -> Body:
    if person.employed:
        return {
            "scheme": "employee",
            "status": "active",
            "monthly_wage_base_fen": person.wage_fen,
            "employer_name": person.profile.employer,
            "insured_since": iso(person.profile.employed_since),
            "paid_through_month": month(person.snapshot_month),
            "resident_yearly_contribution_fen": 0,
        }
    resident = 16 <= person.age < 60 and not person.deceased
    return {
        "scheme": "resident" if resident else "none",
        "status": "active" if resident else "none",
        "monthly_wage_base_fen": 0,
        "employer_name": None,
        "insured_since": None,
        "paid_through_month": None,
        "resident_yearly_contribution_fen": draw.choice("level", (20_000, 20_000, 30_000, 50_000))
        if resident
        else 0,
    }


DEPARTMENT = Department(
    code="social_insurance", name="社保", holder="人社局", answer=answer, monthly=True
)
