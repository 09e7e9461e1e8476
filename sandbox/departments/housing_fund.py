"""住房公积金 (公积金管理中心): the monthly deposit base, which is the wage behind it."""

from __future__ import annotations

from sandbox.departments.base import Body, Department, month, months_between
from sandbox.people import Draw, Person

NO_ACCOUNT: Body = {
    "account_status": "none",
    "employer_name": None,
    "monthly_deposit_base_fen": 0,
    "contribution_rate_percent": 0,
    "monthly_deposit_fen": 0,
    "balance_fen": 0,
    "last_deposit_month": None,
}


def answer(person: Person) -> Body:
    """The account in the snapshot month: status, deposit base and rate, balance."""
    draw = Draw("housing_fund", person.number)
    profile = person.profile
    hired = profile.employed_since
    if not profile.monthly_wage_fen or hired is None or not person.known(hired):
        return dict(NO_ACCOUNT)
    if not draw.chance("has_account", 0.8):
        return dict(NO_ACCOUNT)
    rate = draw.integer("rate", 5, 12)
    # Employee and employer each pay `rate` % of the base, each rounded to the fen.
    deposit = 2 * round(profile.monthly_wage_fen * rate / 100)
    last = person.snapshot_month if person.employed else person.birthday(60)
    paid_months = min(120, max(1, months_between(hired, last)))
    return {
        "account_status": "active" if person.employed else "sealed",
        "employer_name": profile.employer,
        "monthly_deposit_base_fen": profile.monthly_wage_fen if person.employed else 0,
        "contribution_rate_percent": rate,
        "monthly_deposit_fen": deposit if person.employed else 0,
        # What has not been withdrawn (for rent, a purchase) of what was paid in.
        "balance_fen": int(deposit * paid_months * (0.3 + 0.7 * draw.fraction("kept"))),
        "last_deposit_month": month(last),
    }


DEPARTMENT = Department(
    code="housing_fund", name="公积金", holder="公积金管理中心", answer=answer, monthly=True
)
