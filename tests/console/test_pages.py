"""The console's pages beyond the first slice, against real processes: the provider, the
registry and the verification service over HTTP, the department sandbox behind it.

核对 from the file (consents recorded, the report shown with what is missing said plainly and
printed on A4).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox.app import create_app as create_sandbox
from sandbox.settings import SandboxSettings
from services.console.app import create_app as create_console
from services.registry.app import create_app as create_registry
from services.registry.settings import RegistrySettings
from services.verification.app import create_app as create_verification
from services.verification.settings import VerificationSettings
from shared.identity import mask_identity_number
from tests.conftest import serving
from tests.console.conftest import (
    ConsoleIdp,
    Stack,
    console_settings,
    csrf_of,
    serving_on,
    sign_in,
)
from tests.helpers import bearer, identity_number

# Quick to give up, so that a department made to fail shows within a test's patience.
DEPARTMENTS = (
    "hukou marriage social_insurance medical_insurance housing_fund tax market "
    "real_estate vehicle finance disability"
).split()


@contextlib.contextmanager
def _checked_stack(
    console_idp: ConsoleIdp,
    registry_settings: RegistrySettings,
    verification_db: tuple[str, str | None],
    home: Path,
) -> Iterator[dict[str, str]]:
    """Sandbox, registry and verification (each trusting the provider, the verification
    service calling the registry with its own client), and the console in front."""
    idp = console_idp.idp
    suite = registry_settings.suite.model_copy(update={"auth_issuer": idp.issuer})
    secret = idp.registrations.clients["svc-verification"].secret
    assert secret is not None
    with (
        serving(create_sandbox(SandboxSettings(nats_url="", seed=7))) as sandbox,
        serving(create_registry(registry_settings.model_copy(update={"suite": suite}))) as reg,
    ):
        verification_settings = VerificationSettings(
            suite=suite,
            database_url=verification_db[0],
            database_schema=verification_db[1],
            departments_url=sandbox,
            registry_url=reg,
            client_id="svc-verification",
            client_secret=secret,
            poll_seconds=0.05,
            refetch_seconds=0.5,
            departments={
                code: {"timeout_seconds": 1.0, "retries": 1, "breaker_failures": 1000}
                for code in DEPARTMENTS
            },
        )
        with serving(create_verification(verification_settings)) as verification:
            settings = console_settings(console_idp, reg, home).model_copy(
                update={"verification_url": verification}
            )
            with serving_on(create_console(settings), console_idp.console_port) as console_url:
                yield {
                    "console": console_url,
                    "registry": reg,
                    "verification": verification,
                    "sandbox": sandbox,
                }


@pytest.fixture
async def verification_db(
    migrated_database: Callable[[str], Awaitable[tuple[str, str | None]]],
) -> tuple[str, str | None]:
    return await migrated_database("verification")


@pytest.fixture
def checked(
    console_idp: ConsoleIdp,
    registry_settings: RegistrySettings,
    verification_db: tuple[str, str | None],
    tmp_path: Path,
) -> Iterator[dict[str, str]]:
    with _checked_stack(console_idp, registry_settings, verification_db, tmp_path) as urls:
        yield urls


def _file(client: httpx.Client, console_url: str, number: str, **extra: str) -> str:
    form = client.get(f"{console_url}/households/new")
    answer = client.post(
        f"{console_url}/households/new",
        data={
            "csrf": csrf_of(form),
            "region": "411302",
            "address": "建设路12号",
            "category": "dibao",
            "causes": ["illness"],
            "m0_name": "张三明",
            "m0_id": number,
            **extra,
        },
    )
    assert answer.status_code == 303, answer.text
    return str(answer.headers["location"]).rsplit("/", 1)[-1]


def _eventually(
    client: httpx.Client, url: str, marker: str, *, timeout: float = 60
) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        page = client.get(url)
        if marker in page.text or time.monotonic() > deadline:
            return page
        time.sleep(0.3)


def _yuan(fen: int) -> str:
    return f"{fen / 100:.2f}"


class TestConsent:
    def test_consents_from_the_file_bring_a_report_with_what_is_missing_said_plainly(
        self, checked: dict[str, str], console_idp: ConsoleIdp
    ) -> None:
        head = identity_number(serial=601)
        spouse = identity_number(birth=date(1982, 3, 4), serial=602)
        other = identity_number(serial=603)  # valid, but nobody of this household
        console_url = checked["console"]
        stack = Stack(console_url, checked["registry"], console_idp)
        # 车辆 answers 500 every time: the report must say it did not answer.
        httpx.put(f"{checked['sandbox']}/admin/departments/vehicle", json={"fault": "http_500"})
        with httpx.Client(follow_redirects=False, timeout=30) as browser:
            sign_in(browser, stack, "shequ-411302")
            household_id = _file(
                browser,
                console_url,
                head,
                m1_name="李四芳",
                m1_id=spouse,
                m1_relation="spouse",
            )
            url = f"{console_url}/households/{household_id}"
            page = browser.get(url)
            consent: dict[str, Any] = {
                "csrf": csrf_of(page),
                "signed_on": "2026-11-01",
                "document_ref": "授权-2026-601",
                # 金融 not ticked: the report must say it was not asked, for want of consent.
                "departments": [d for d in DEPARTMENTS if d != "finance"],
            }
            wrong = browser.post(f"{url}/consents", data={**consent, "c0_id": other})
            nobody = browser.post(f"{url}/consents", data=consent)
            recorded = browser.post(
                f"{url}/consents", data={**consent, "c0_id": head, "c1_id": spouse.lower()}
            )
            flashed = browser.get(url)
            done = _eventually(browser, url, 'id="report-income"')
            printed = browser.get(f"{url}/report")

        assert "录入核对授权书" in page.text
        assert wrong.status_code == 422
        assert "张三明 的身份证号与档案中的不一致" in wrong.text
        assert nobody.status_code == 422
        assert "请至少填写一位签字成员的身份证号" in nobody.text
        assert recorded.status_code == 303, recorded.text
        assert "已录入 张三明、李四芳 的核对授权书" in flashed.text

        token = console_idp.idp.client_token("demo-seeder", "verification:request")
        rows = httpx.get(
            f"{checked['verification']}/v1/verifications",
            params={"household_id": household_id, "status": "completed"},
            headers=bearer(token),
        ).json()
        assert rows, "no completed verification"
        report = httpx.get(
            f"{checked['verification']}/v1/verifications/{rows[0]['id']}/report",
            headers=bearer(token),
        ).json()["report"]
        assert "vehicle" in report["unavailable_departments"]
        for shown in (done.text, printed.text):
            income = re.search(r'id="report-income">([\d.]+) 元', shown)
            assert income and income.group(1) == _yuan(report["per_capita_income_fen"])
            missing = shown.split('id="report-missing">', 1)[1].split("</div>", 1)[0]
            assert "未能核对：</strong>机动车登记（交警） 没有答复" in missing
            assert (
                f"张三明（{mask_identity_number(head)}） 没有覆盖 金融资产（人民银行） 的有效授权书"
                in missing
            )
            assert f"李四芳（{mask_identity_number(spouse)}）" in missing
            assert shown.count('class="discrepancy"') == len(report["discrepancies"])
            for number in (head, spouse):
                assert number not in shown
        assert "打印核对报告" in done.text
        assert "家庭经济状况核对报告" in printed.text

    def test_a_person_without_the_scope_sees_no_consent_form(
        self, checked: dict[str, str], console_idp: ConsoleIdp
    ) -> None:
        console_url = checked["console"]
        stack = Stack(console_url, checked["registry"], console_idp)
        with httpx.Client(follow_redirects=False, timeout=30) as browser:
            sign_in(browser, stack, "shequ-411302")
            household_id = _file(browser, console_url, identity_number(serial=604))
        with httpx.Client(follow_redirects=False, timeout=30) as helper:
            sign_in(helper, stack, "bangfuren-411302")
            page = helper.get(f"{console_url}/households/{household_id}")
            refused = helper.post(
                f"{console_url}/households/{household_id}/consents",
                data={
                    "csrf": csrf_of(page),
                    "document_ref": "x",
                    "departments": ["tax"],
                    "c0_id": identity_number(serial=604),
                },
            )

        assert page.status_code == 200
        assert "录入核对授权书" not in page.text
        assert refused.status_code == 403
        assert "没有进行这项操作的权限" in refused.text
