"""One household checked against the sandbox's departments over HTTP: consent, faults, report."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, timedelta

import httpx
import pytest

from sandbox.app import create_app
from sandbox.settings import SandboxSettings
from services.verification.adapters.client import DepartmentClient, DepartmentConfig
from services.verification.adapters.transport import HttpTransport
from services.verification.checking import Person, check_household
from services.verification.domain.consent import Consent
from services.verification.domain.departments import Department
from services.verification.domain.report import AssetLimits, ItemStatus, build_report
from tests.conftest import serving
from tests.helpers import identity_number

TODAY = date.today()
LIMITS = AssetLimits(2_000_000, 1, 0, 5_000_000, source="test parameters")


def consent(departments: frozenset[Department] = frozenset(Department), **kw: object) -> Consent:
    values: dict[str, object] = {
        "id": "c-1",
        "person_index": "p",
        "signed_by": "张三明",
        "signed_on": TODAY - timedelta(days=5),
        "expires_on": TODAY + timedelta(days=300),
        "departments": departments,
        "document_ref": "宛城-1",
        **kw,
    }
    return Consent(**values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Sandbox:
    """The sandbox served on loopback: its admin API, and the service's transport to it."""

    admin: httpx.AsyncClient
    transport: HttpTransport


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    with serving(create_app(SandboxSettings(nats_url=""))) as url:
        async with (
            httpx.AsyncClient(base_url=url) as admin,
            HttpTransport.session(connections=8) as session,
        ):
            yield Sandbox(admin, HttpTransport(session, url))


def clients(
    transport: HttpTransport, *, people_per_request: int = 20, concurrency: int = 8
) -> dict[Department, DepartmentClient]:
    return {
        d: DepartmentClient(
            DepartmentConfig(
                d.value,
                timeout_seconds=1,
                retries=1,
                people_per_request=people_per_request,
                concurrency=concurrency,
            ),
            transport,
            max_backoff=0.01,
        )
        for d in Department
    }


class TestCheckHousehold:
    async def test_all_departments_healthy_give_a_complete_report(self, sandbox: Sandbox) -> None:
        people = [
            Person("m1", identity_number(serial=1), (consent(),)),
            Person("m2", identity_number(serial=2), (consent(),)),
        ]
        checked = await check_household(
            people,
            clients(sandbox.transport),
            departments=list(Department),
            purpose="申请审核",
            on=TODAY,
        )
        items = [c.item for c in checked]
        assert len(items) == 22
        assert {i.status for i in items} == {ItemStatus.OK}
        report = build_report(
            household_id="h",
            version=1,
            member_ids=["m1", "m2"],
            items=items,
            declared=[],
            limits=LIMITS,
            discrepancy_threshold_fen=10_000,
        )
        assert report.income_complete
        assert report.unavailable_departments == ()

    async def test_a_departments_members_are_asked_in_one_request_for_the_same_report(
        self, sandbox: Sandbox
    ) -> None:
        people = [Person(f"m{n}", identity_number(serial=20 + n), (consent(),)) for n in range(3)]
        people.append(Person("none", identity_number(serial=30), ()))
        outcomes = {}
        for per_request in (20, 1):
            departments = clients(sandbox.transport, people_per_request=per_request)
            checked = await check_household(
                people, departments, departments=list(Department), purpose="申请审核", on=TODAY
            )
            calls = {d.value: c.calls for d, c in departments.items()}
            assert calls == dict.fromkeys(calls, 1 if per_request > 1 else 3)
            outcomes[per_request] = [
                (
                    c.item.member_id,
                    c.item.department,
                    c.item.status,
                    c.item.findings,
                    c.item.request_hash,
                    c.exchange.response_digest if c.exchange else None,
                )
                for c in checked
            ]
        # Member by member, as given; the same items and evidence whichever way they were asked.
        assert outcomes[20] == outcomes[1]
        assert [o[0] for o in outcomes[20]] == [p.member_id for p in people for _ in Department]
        assert {o[2] for o in outcomes[20] if o[0] != "none"} == {ItemStatus.OK}

    async def test_households_checked_for_different_purposes_are_never_asked_together(
        self, sandbox: Sandbox
    ) -> None:
        # One slot a department: the first household holds it, the other two wait for it and
        # would go in one request, but a request carries one purpose (its header).
        departments = clients(sandbox.transport, concurrency=1)
        purposes = ["申请审核", "动态复核", "申请审核"]
        households = [
            [
                Person(f"h{h}m{n}", identity_number(serial=40 + 2 * h + n), (consent(),))
                for n in (0, 1)
            ]
            for h in range(3)
        ]
        checked = await asyncio.gather(
            *(
                check_household(
                    people, departments, departments=list(Department), purpose=purpose, on=TODAY
                )
                for people, purpose in zip(households, purposes, strict=True)
            )
        )
        for one in checked:
            assert [c.item.status for c in one] == [ItemStatus.OK] * 2 * len(Department)
        # The first household alone, then the second's people, then the third's: the waiting
        # second and third would fill one request, but their purposes differ.
        assert {d.value: c.calls for d, c in departments.items()} == {
            d.value: 3 for d in Department
        }

    async def test_missing_expired_revoked_or_partial_consent_skips_exactly_those_calls(
        self, sandbox: Sandbox
    ) -> None:
        people = [
            Person("none", identity_number(serial=3), ()),
            Person(
                "expired",
                identity_number(serial=4),
                (
                    consent(
                        expires_on=TODAY - timedelta(days=1), signed_on=TODAY - timedelta(days=400)
                    ),
                ),
            ),
            Person("revoked", identity_number(serial=5), (consent(revoked_on=TODAY),)),
            Person("tax-only", identity_number(serial=6), (consent(frozenset({Department.TAX})),)),
        ]
        departments = [Department.TAX, Department.FINANCE]
        checked = await check_household(
            people, clients(sandbox.transport), departments=departments, purpose="复核", on=TODAY
        )
        items = [c.item for c in checked]
        outcome = {(i.member_id, i.department.value): (i.status.value, i.reason) for i in items}
        assert outcome == {
            ("none", "tax"): ("no_consent", "consent missing"),
            ("none", "finance"): ("no_consent", "consent missing"),
            ("expired", "tax"): ("no_consent", "consent expired"),
            ("expired", "finance"): ("no_consent", "consent expired"),
            ("revoked", "tax"): ("no_consent", "consent revoked"),
            ("revoked", "finance"): ("no_consent", "consent revoked"),
            ("tax-only", "tax"): ("ok", None),
            ("tax-only", "finance"): ("no_consent", "consent not_covered"),
        }

    @pytest.mark.parametrize(
        ("fault", "status"),
        [
            ("http_500", "unavailable"),
            ("malformed_json", "error"),
            ("wrong_schema", "error"),
        ],
    )
    async def test_a_faulty_department_is_named_in_the_report_and_the_rest_is_kept(
        self, sandbox: Sandbox, fault: str, status: str
    ) -> None:
        await sandbox.admin.put("/admin/departments/finance", json={"fault": fault})
        people = [Person("m1", identity_number(serial=7), (consent(),))]
        checked = await check_household(
            people,
            clients(sandbox.transport),
            departments=list(Department),
            purpose="申请审核",
            on=TODAY,
        )
        items = [c.item for c in checked]
        by_department = {i.department: i for i in items}
        assert by_department[Department.FINANCE].status.value == status
        assert by_department[Department.FINANCE].reason
        assert by_department[Department.FINANCE].findings is None
        others = {i.status for d, i in by_department.items() if d is not Department.FINANCE}
        assert others == {ItemStatus.OK}
        report = build_report(
            household_id="h",
            version=1,
            member_ids=["m1"],
            items=items,
            declared=[],
            limits=LIMITS,
            discrepancy_threshold_fen=10_000,
        )
        assert report.asset_verdicts["deposits_per_capita"].value == "unknown"
        assert report.unavailable_departments == (Department.FINANCE,)
