"""Each department's real (sandbox) answer, fetched over HTTP, mapped to findings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, timedelta

import pytest

from sandbox.app import create_app
from sandbox.settings import SandboxSettings
from services.verification.adapters.mappers import to_findings
from services.verification.adapters.transport import HttpTransport, Malformed, Query
from services.verification.domain.departments import Department
from services.verification.domain.report import Findings
from tests.conftest import serving
from tests.helpers import identity_number


@pytest.fixture
async def departments() -> AsyncIterator[HttpTransport]:
    with serving(create_app(SandboxSettings(nats_url=""))) as url:
        async with HttpTransport.session(connections=8) as session:
            yield HttpTransport(session, url)


async def findings(
    transport: HttpTransport, department: Department, number: str
) -> tuple[Findings, date]:
    answer = await transport.send(Query(department.value, number, "c-1", "核对"), timeout=5)
    return to_findings(department, answer.body)


PEOPLE = [identity_number(birth=date(1975, 3, 9), serial=s) for s in range(40)]


class TestMappers:
    async def test_every_department_answer_maps_with_integer_fen(
        self, departments: HttpTransport
    ) -> None:
        for department in Department:
            for number in PEOPLE[:5]:
                found, as_of = await findings(departments, department, number)
                assert as_of <= date.today()
                assert all(
                    isinstance(i.monthly_fen, int) and i.monthly_fen >= 0 for i in found.incomes
                )
                assert all(isinstance(a.value_fen, int) for a in found.assets)

    async def test_a_wage_is_seen_alike_by_tax_social_insurance_and_the_housing_fund(
        self, departments: HttpTransport
    ) -> None:
        checked = 0
        for number in PEOPLE:
            tax, _ = await findings(departments, Department.TAX, number)
            wages = [i.monthly_fen for i in tax.incomes if i.kind == "wages"]
            if not wages:
                continue
            social, _ = await findings(departments, Department.SOCIAL_INSURANCE, number)
            fund, _ = await findings(departments, Department.HOUSING_FUND, number)
            bases = {i.monthly_fen for f in (social, fund) for i in f.incomes if i.kind == "wages"}
            # Twelve months averaged: equal when the wage ran all year.
            assert wages[0] <= max(bases)
            checked += 1
        assert checked >= 1, "no employed person among the sample"

    async def test_monthly_departments_are_as_of_their_snapshot_month(
        self, departments: HttpTransport
    ) -> None:
        _, as_of = await findings(departments, Department.FINANCE, PEOPLE[0])
        first_of_month = date.today().replace(day=1)
        assert as_of < first_of_month
        assert (as_of + timedelta(days=1)).day == 1  # the last day of its month

    async def test_a_wrong_schema_or_the_wrong_department_is_malformed(self) -> None:
        with pytest.raises(Malformed, match="unexpected answer from tax"):
            to_findings(Department.TAX, {"code": "0000", "msg": "查询成功", "data": {}})
        with pytest.raises(Malformed, match="answer from vehicle"):
            to_findings(
                Department.TAX, {"department": "vehicle", "as_of": "2026-01-01", "months": []}
            )
