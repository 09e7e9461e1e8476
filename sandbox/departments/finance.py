"""金融 (人民银行 and the banks): deposits, securities and the cash value of insurance."""

from __future__ import annotations

from sandbox.departments.base import Body, Department, month_end, yuan
from sandbox.people import Draw, Person

BANKS = ("中国农业银行", "中国邮政储蓄银行", "河南省农村信用社", "中国工商银行")
BROKERS = ("中原证券", "华泰证券")
INSURERS = ("中国人寿", "中国平安")


def answer(person: Person) -> Body:
    """Balances at the end of the snapshot month, and their totals."""
    draw = Draw("finance", person.number)
    wealthy = person.profile.wealthy and person.age >= 18
    deposits: list[Body] = []
    if draw.chance("demand", 0.7):
        deposits.append(_deposit(draw, "demand", yuan(draw, "demand.balance", 0, 8_000)))
    if wealthy:
        deposits.append(_deposit(draw, "time", yuan(draw, "time.balance", 100_000, 500_000)))
    securities: list[Body] = []
    if (wealthy and draw.chance("has_securities", 0.5)) or draw.chance("small_investor", 0.01):
        securities.append(
            {
                "institution": draw.choice("broker", BROKERS),
                "market_value_fen": yuan(draw, "securities", 20_000, 300_000),
            }
        )
    insurance: list[Body] = []
    if draw.chance("insured", 0.5 if wealthy else 0.03):
        insurance.append(
            {
                "insurer": draw.choice("insurer", INSURERS),
                "product_kind": draw.choice("product", ("life", "annuity")),
                "cash_value_fen": yuan(draw, "cash_value", 10_000, 80_000),
            }
        )
    return {
        "snapshot_date": month_end(person.snapshot_month).isoformat(),
        "deposits": deposits,
        "securities": securities,
        "insurance_policies": insurance,
        "totals": {
            "deposits_fen": sum(d["balance_fen"] for d in deposits),
            "securities_fen": sum(s["market_value_fen"] for s in securities),
            "insurance_cash_value_fen": sum(i["cash_value_fen"] for i in insurance),
        },
    }


def _deposit(draw: Draw, kind: str, balance_fen: int) -> Body:
    return {
        "institution": draw.choice(f"{kind}.bank", BANKS),
        "account_kind": kind,
        "balance_fen": balance_fen,
    }


DEPARTMENT = Department(code="finance", name="金融", holder="人民银行", answer=answer, monthly=True)
