"""税务 (税务局): the taxable income items declared for a person, month by month."""

from __future__ import annotations

from datetime import date

from sandbox.departments.base import Body, Department, month, month_end, months_back, yuan
from sandbox.people import Draw, Person

MONTHS = 12
WAGE_ALLOWANCE_FEN = 500_000  # 5,000 yuan a month free of individual income tax


def answer(person: Person) -> Body:
    """The last twelve complete months with their income items (工资薪金, 劳务报酬, 经营所得)."""
    draw = Draw("tax", person.number)
    by_month = [
        (first, _items(person, draw, first)) for first in months_back(person.snapshot_month, MONTHS)
    ]
    return {
        "months": [{"month": month(first), "items": items} for first, items in by_month],
        "total_taxable_income_fen": sum(
            item["taxable_income_fen"] for _, items in by_month for item in items
        ),
    }


def _items(person: Person, draw: Draw, first: date) -> list[Body]:
    last = month_end(first)
    items: list[Body] = []
    profile = person.profile
    hired = profile.employed_since
    if profile.monthly_wage_fen and hired and hired <= last < person.birthday(60):
        wage = profile.monthly_wage_fen
        # Three per cent on the first bracket, rounded down to the fen.
        tax = max(0, wage - WAGE_ALLOWANCE_FEN) * 3 // 100
        items.append(_item("wage", profile.employer, wage, tax))
    if person.age >= 18 and draw.chance("freelance", 0.03) and draw.chance(f"{first}.gig", 0.3):
        fee = yuan(draw, f"{first}.fee", 800, 4_000)
        items.append(
            _item("labour_remuneration", "南阳市宛城区某装修工程队", fee, (fee - 80_000) // 5)
        )
    opened = person.business_since
    if profile.business == "individual" and opened and opened <= last:
        income = yuan(draw, f"{first}.business", 3_000, 15_000)
        items.append(_item("business_income", None, income, income // 100))
    return items


def _item(kind: str, payer: str | None, income_fen: int, tax_fen: int) -> Body:
    return {
        "kind": kind,
        "payer_name": payer,
        "taxable_income_fen": income_fen,
        "tax_withheld_fen": max(0, tax_fen),
    }


DEPARTMENT = Department(code="tax", name="税务", holder="税务局", answer=answer, monthly=True)
