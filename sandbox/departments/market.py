"""市场监管 (市场监督管理局): business registrations in which the person has a role."""

from __future__ import annotations

from sandbox.departments.base import Body, Department, alnum, yuan
from sandbox.people import Draw, Person

SHOPS = ("便民超市", "农资经营部", "五金建材店", "小吃店", "汽车修理部", "服装店")
BRANDS = ("顺利", "宏达", "鑫旺", "福源", "兴隆", "永安")


def answer(person: Person) -> Body:
    """Each registration (个体工商户 or company) with the role, capital and status."""
    draw = Draw("market", person.number)
    opened = person.business_since
    kind = person.profile.business
    if kind == "none" or opened is None or not person.known(opened):
        return {"registrations": []}
    brand = draw.choice("brand", BRANDS)
    if kind == "individual":
        registration = {
            "kind": "individual_business",
            "name": f"{brand}{draw.choice('shop', SHOPS)}",
            "credit_code": f"92{person.region}MA{alnum(draw, 'code', 8)}",
            "role": "operator",
            "registered_capital_fen": yuan(draw, "capital", 10_000, 100_000),
            "shareholding_percent": 100,
        }
    else:
        registration = {
            "kind": "company",
            "name": f"南阳市{brand}商贸有限公司",
            "credit_code": f"91{person.region}MA{alnum(draw, 'code', 8)}",
            "role": draw.choice("role", ("legal_representative", "shareholder")),
            "registered_capital_fen": yuan(draw, "capital", 500_000, 5_000_000),
            "shareholding_percent": draw.integer("share", 20, 100),
        }
    registration["status"] = "deregistered" if draw.chance("closed", 0.2) else "active"
    registration["established_date"] = opened.isoformat()
    return {"registrations": [registration]}


DEPARTMENT = Department(code="market", name="市场监管", holder="市场监督管理局", answer=answer)
