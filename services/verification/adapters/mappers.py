"""One mapper per department: its answer, validated, as normalised findings.

A body that does not have the department's shape raises Malformed (the report then says
`error`, never a guessed value). Amounts stay integer fen; a monthly income derived from a
year of declarations is the yearly total divided by twelve, rounded down.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from services.verification.adapters.transport import Malformed
from services.verification.domain.departments import Department
from services.verification.domain.report import Asset, Findings, Income


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")

    department: str
    as_of: date


class _Hukou(_Body):
    status: Literal["normal", "deceased"]
    hukou_kind: Literal["rural", "urban"]
    household_number: str
    relation_to_head: str
    registered_region: str


class _Marriage(_Body):
    marital_status: str


class _Pension(BaseModel):
    monthly_amount_fen: int
    status: str


class _Unemployment(BaseModel):
    monthly_amount_fen: int


class _Contributions(BaseModel):
    scheme: str
    status: str
    monthly_wage_base_fen: int


class _SocialInsurance(_Body):
    pension: _Pension | None
    unemployment_benefit: _Unemployment | None
    contributions: _Contributions


class _Costs(BaseModel):
    year: int
    in_policy_self_paid_fen: int


class _MedicalInsurance(_Body):
    enrolled: bool
    chronic_disease_certified: bool
    costs: list[_Costs]


class _HousingFund(_Body):
    account_status: str
    monthly_deposit_base_fen: int


class _TaxItem(BaseModel):
    kind: str
    taxable_income_fen: int


class _TaxMonth(BaseModel):
    month: str
    items: list[_TaxItem]


class _Tax(_Body):
    months: list[_TaxMonth]


class _Registration(BaseModel):
    kind: str
    registered_capital_fen: int
    shareholding_percent: int


class _Market(_Body):
    registrations: list[_Registration]


class _Property(BaseModel):
    usage: str
    share_percent: int
    assessed_value_fen: int


class _RealEstate(_Body):
    properties: list[_Property]


class _Vehicle(BaseModel):
    kind: str
    estimated_value_fen: int


class _Vehicles(_Body):
    vehicles: list[_Vehicle]


class _FinanceTotals(BaseModel):
    deposits_fen: int
    securities_fen: int
    insurance_cash_value_fen: int


class _Finance(_Body):
    totals: _FinanceTotals


class _Certificate(BaseModel):
    grade: int
    status: str


class _Disability(_Body):
    certificate: _Certificate | None


def _hukou(b: _Hukou) -> Findings:
    return Findings(
        flags=frozenset({"deceased"}) if b.status == "deceased" else frozenset(),
        facts={
            "hukou_type": b.hukou_kind,
            "household_number": b.household_number,
            "relation_to_head": b.relation_to_head,
            "registered_region": b.registered_region,
        },
    )


def _marriage(b: _Marriage) -> Findings:
    return Findings(facts={"marital_status": b.marital_status})


def _social_insurance(b: _SocialInsurance) -> Findings:
    incomes, flags = [], set()
    if b.pension and b.pension.status == "paying":
        incomes.append(Income("pension", b.pension.monthly_amount_fen))
        flags.add("receiving_pension")
    if b.unemployment_benefit:
        incomes.append(Income("unemployment_benefit", b.unemployment_benefit.monthly_amount_fen))
    if b.contributions.scheme == "employee" and b.contributions.status == "active":
        incomes.append(Income("wages", b.contributions.monthly_wage_base_fen))
    return Findings(incomes=tuple(incomes), flags=frozenset(flags))


def _medical_insurance(b: _MedicalInsurance) -> Findings:
    return Findings(
        flags=frozenset({"chronic_disease_certified"})
        if b.chronic_disease_certified
        else frozenset(),
        facts={"medical_insurance": "enrolled" if b.enrolled else "none"},
        amounts={f"in_policy_self_paid_fen.{c.year}": c.in_policy_self_paid_fen for c in b.costs},
    )


def _housing_fund(b: _HousingFund) -> Findings:
    if b.account_status != "active":
        return Findings()
    return Findings(incomes=(Income("wages", b.monthly_deposit_base_fen),))


_TAX_KINDS = {
    "wage": "wages",
    "labour_remuneration": "labour_remuneration",
    "business_income": "business_income",
}


def _tax(b: _Tax) -> Findings:
    yearly: dict[str, int] = {}
    for month in b.months:
        for item in month.items:
            kind = _TAX_KINDS.get(item.kind, "other_income")
            yearly[kind] = yearly.get(kind, 0) + item.taxable_income_fen
    months = max(len(b.months), 1)
    return Findings(
        incomes=tuple(Income(kind, total // months) for kind, total in sorted(yearly.items()))
    )


def _market(b: _Market) -> Findings:
    capital = sum(r.registered_capital_fen * r.shareholding_percent // 100 for r in b.registrations)
    if not b.registrations:
        return Findings()
    return Findings(
        assets=(Asset("business", capital, len(b.registrations)),),
        flags=frozenset({"business_owner"}),
    )


def _real_estate(b: _RealEstate) -> Findings:
    return Findings(
        assets=tuple(
            Asset("real_estate", p.assessed_value_fen * p.share_percent // 100)
            for p in b.properties
        )
    )


def _vehicle(b: _Vehicles) -> Findings:
    # Tricycles, motorcycles and farm vehicles are tools of the trade, not a car.
    cars = [v for v in b.vehicles if v.kind == "small_car"]
    return Findings(
        assets=tuple(Asset("vehicle", v.estimated_value_fen) for v in cars),
        flags=frozenset({"car_owner"}) if cars else frozenset(),
    )


def _finance(b: _Finance) -> Findings:
    totals = b.totals
    return Findings(
        assets=tuple(
            Asset(kind, value)
            for kind, value in (
                ("deposits", totals.deposits_fen),
                ("securities", totals.securities_fen),
                ("insurance", totals.insurance_cash_value_fen),
            )
            if value
        )
    )


def _disability(b: _Disability) -> Findings:
    if b.certificate is None or b.certificate.status != "valid":
        return Findings()
    return Findings(
        flags=frozenset({"disabled"}), facts={"disability_grade": str(b.certificate.grade)}
    )


_MAPPERS: dict[Department, tuple[type[_Body], Callable[[Any], Findings]]] = {
    Department.HUKOU: (_Hukou, _hukou),
    Department.MARRIAGE: (_Marriage, _marriage),
    Department.SOCIAL_INSURANCE: (_SocialInsurance, _social_insurance),
    Department.MEDICAL_INSURANCE: (_MedicalInsurance, _medical_insurance),
    Department.HOUSING_FUND: (_HousingFund, _housing_fund),
    Department.TAX: (_Tax, _tax),
    Department.MARKET: (_Market, _market),
    Department.REAL_ESTATE: (_RealEstate, _real_estate),
    Department.VEHICLE: (_Vehicles, _vehicle),
    Department.FINANCE: (_Finance, _finance),
    Department.DISABILITY: (_Disability, _disability),
}


def to_findings(department: Department, body: dict[str, Any]) -> tuple[Findings, date]:
    """The department's answer as findings, with the date it is valid for."""
    model, mapper = _MAPPERS[department]
    try:
        parsed = model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise Malformed(f"unexpected answer from {department}: {where} {first['msg']}") from exc
    if parsed.department != department:
        raise Malformed(f"answer from {parsed.department}, asked {department}")
    return mapper(parsed), _valid_on(body, parsed.as_of)


def _valid_on(body: dict[str, Any], as_of: date) -> date:
    """A department serving a monthly snapshot is as of that month's last day, not today."""
    snapshot = body.get("snapshot_month")
    if not isinstance(snapshot, str):
        return as_of
    year, month = (int(part) for part in snapshot.split("-"))
    following = date(year + month // 12, month % 12 + 1, 1)
    return date.fromordinal(following.toordinal() - 1)
