"""The console's pages beyond the first slice, against real processes: the provider, the
registry and the verification service over HTTP, the department sandbox behind it.

核对 from the file (consents recorded, the report shown with what is missing said plainly and
printed on A4).
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox.app import create_app as create_sandbox
from sandbox.settings import SandboxSettings
from services.benefits.app import create_app as create_benefits
from services.benefits.settings import BenefitsSettings
from services.console.app import create_app as create_console
from services.console.results import card_pending
from services.console.verification import as_of_report
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
from tests.console.test_app import _step
from tests.helpers import bearer, identity_number

# Quick to give up, so that a department made to fail shows within a test's patience.
DEPARTMENTS = (
    "hukou marriage social_insurance medical_insurance housing_fund tax market "
    "real_estate vehicle finance disability"
).split()


def _secret(idp: ConsoleIdp, client_id: str) -> str:
    secret = idp.idp.registrations.clients[client_id].secret
    assert secret is not None
    return secret


@contextlib.contextmanager
def _checked_stack(
    console_idp: ConsoleIdp,
    registry_settings: RegistrySettings,
    databases: dict[str, tuple[str, str | None]],
    home: Path,
) -> Iterator[dict[str, str]]:
    """Sandbox, registry, verification and benefits (each trusting the provider, the last two
    calling the registry with their own clients), and the console in front."""
    idp = console_idp.idp
    suite = registry_settings.suite.model_copy(update={"auth_issuer": idp.issuer})
    with (
        serving(create_sandbox(SandboxSettings(nats_url="", seed=7))) as sandbox,
        serving(create_registry(registry_settings.model_copy(update={"suite": suite}))) as reg,
    ):
        verification_settings = VerificationSettings(
            suite=suite,
            database_url=databases["verification"][0],
            database_schema=databases["verification"][1],
            departments_url=sandbox,
            registry_url=reg,
            client_id="svc-verification",
            client_secret=_secret(console_idp, "svc-verification"),
            poll_seconds=0.05,
            refetch_seconds=0.5,
            departments={
                code: {"timeout_seconds": 1.0, "retries": 1, "breaker_failures": 1000}
                for code in DEPARTMENTS
            },
        )
        benefits_settings = BenefitsSettings(
            suite=suite,
            database_url=databases["benefits"][0],
            database_schema=databases["benefits"][1],
            registry_url=reg,
            client_id="svc-benefits",
            client_secret=_secret(console_idp, "svc-benefits"),
        )
        with (
            serving(create_verification(verification_settings)) as verification,
            serving(create_benefits(benefits_settings)) as benefits,
        ):
            settings = console_settings(console_idp, reg, home).model_copy(
                update={"verification_url": verification, "benefits_url": benefits}
            )
            with serving_on(create_console(settings), console_idp.console_port) as console_url:
                yield {
                    "console": console_url,
                    "registry": reg,
                    "verification": verification,
                    "sandbox": sandbox,
                    "benefits": benefits,
                }


@pytest.fixture
async def databases(
    migrated_database: Callable[[str], Awaitable[tuple[str, str | None]]],
) -> dict[str, tuple[str, str | None]]:
    return {name: await migrated_database(name) for name in ("verification", "benefits")}


@pytest.fixture
def checked(
    console_idp: ConsoleIdp,
    registry_settings: RegistrySettings,
    databases: dict[str, tuple[str, str | None]],
    tmp_path: Path,
) -> Iterator[dict[str, str]]:
    with _checked_stack(console_idp, registry_settings, databases, tmp_path) as urls:
        yield urls


READER = "test-benefits-reader"


def _reader_token(console_idp: ConsoleIdp) -> str:
    """A benefits:read token of 411302 from a client registered for the test: to read the card
    the console shows, straight from the benefits API."""
    idp = console_idp.idp
    document = json.loads(idp.clients_file.read_text(encoding="utf-8"))
    if not any(c["client_id"] == READER for c in document["clients"]):
        document["clients"].append(
            {
                "client_id": READER,
                "client_secret": "test-only-benefits-reader",
                "grant_types": ["client_credentials"],
                "scopes": ["benefits:read"],
                "regions": ["411302"],
            }
        )
        idp.clients_file.write_text(json.dumps(document), encoding="utf-8")
        idp.reload()
    return idp.client_token(READER, "benefits:read")


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


def _settled(client: httpx.Client, url: str, *, timeout: float = 60) -> httpx.Response:
    """The status frame once it no longer reloads itself (or as it is after `timeout`)."""
    deadline = time.monotonic() + timeout
    frame = client.get(url)
    while 'http-equiv="refresh"' in frame.text and time.monotonic() < deadline:
        time.sleep(0.3)
        frame = client.get(url)
    return frame


def _request_verification(
    client: httpx.Client, file_url: str, file_page: httpx.Response, head: str, paper: str
) -> httpx.Response:
    """Record the head's consent from the paper form `paper`, which requests a 核对."""
    return client.post(
        f"{file_url}/consents",
        data={
            "csrf": csrf_of(file_page),
            "document_ref": paper,
            "departments": DEPARTMENTS,
            "c0_id": head,
        },
    )


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

    def test_the_files_consents_are_listed_and_one_is_withdrawn_with_a_reason(
        self, checked: dict[str, str], console_idp: ConsoleIdp
    ) -> None:
        head = identity_number(serial=605)
        console_url = checked["console"]
        stack = Stack(console_url, checked["registry"], console_idp)
        with httpx.Client(follow_redirects=False, timeout=30) as browser:
            sign_in(browser, stack, "shequ-411302")
            household_id = _file(browser, console_url, head)
            url = f"{console_url}/households/{household_id}"
            page = browser.get(url)
            recorded = _request_verification(browser, url, page, head, "授权-2026-605")
            listed = browser.get(url)
            consent_id = re.findall(r'<tr data-consent="([^"]+)">', listed.text)
            revoke = f"{url}/consents/{consent_id[0]}/revoke"
            no_reason = browser.post(revoke, data={"csrf": csrf_of(listed)})
            withdrawn = browser.post(
                revoke, data={"csrf": csrf_of(listed), "reason": "本人书面撤回"}
            )
            after = browser.get(url)

        assert "已录入的核对授权书" not in page.text  # none yet
        assert recorded.status_code == 303, recorded.text
        assert len(consent_id) == 1
        row = listed.text.split(f'<tr data-consent="{consent_id[0]}">', 1)[1].split("</tr>", 1)[0]
        assert "授权-2026-605" in row and mask_identity_number(head) in row and head not in row
        assert '<td class="consent-state">有效</td>' in row
        assert no_reason.status_code == 422 and "撤回授权必须填写理由" in no_reason.text
        assert withdrawn.status_code == 303, withdrawn.text
        assert "已撤回 张三明 的核对授权书（授权-2026-605）" in after.text
        row = after.text.split(f'<tr data-consent="{consent_id[0]}">', 1)[1].split("</tr>", 1)[0]
        assert "已撤回（本人书面撤回）" in row
        assert "revoke-consent" not in row  # nothing left to withdraw

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


def _plan(client: httpx.Client, url: str) -> None:
    page = client.get(url)
    version = re.search(r'name="version" value="(\d+)"', page.text)
    assert version, page.text[:2000]
    added = client.post(
        f"{url}/plan",
        data={
            "csrf": csrf_of(page),
            "version": version.group(1),
            "group": "medical",
            "measure": "大病医疗救助",
            "lead_department": "区医保局",
        },
    )
    assert added.status_code == 303, added.text


class TestPrinting:
    def test_the_public_notice_lists_the_noticed_households_masked(
        self, checked: dict[str, str], console_idp: ConsoleIdp
    ) -> None:
        console_url = checked["console"]
        stack = Stack(console_url, checked["registry"], console_idp)
        noticed, waiting = identity_number(serial=611), identity_number(serial=612)
        with (
            httpx.Client(follow_redirects=False, timeout=30) as shequ,
            httpx.Client(follow_redirects=False, timeout=30) as jiedao,
            httpx.Client(follow_redirects=False, timeout=30) as county,
        ):
            for client, username in (
                (shequ, "shequ-411302"),
                (jiedao, "jiedao-411302"),
                (county, "jiekunban-411302"),
            ):
                sign_in(client, stack, username)
            household_id = _file(shequ, console_url, noticed, community_name="光武社区")
            _file(shequ, console_url, waiting, m0_name="王五")
            url = f"{console_url}/households/{household_id}"
            walked = [_step(shequ, url, "community_review").status_code]
            _plan(jiedao, url)
            walked.append(_step(jiedao, url, "street_review").status_code)
            for step in ("county_approve", "start_notice"):
                walked.append(_step(county, url, step).status_code)
            picked = county.get(f"{console_url}/notices")
            page = county.get(f"{console_url}{picked.headers['location']}")
            other = county.get(f"{console_url}/notices/4101")
            css = httpx.get(f"{console_url}/static/console.css").text

        assert walked == [303] * 4
        assert picked.status_code == 303
        assert picked.headers["location"] == "/notices/411302"
        assert page.status_code == 200
        assert 'id="notice-total">1<' in page.text
        picker = page.text.split('<select name="region">', 1)[1].split("</select>", 1)[0]
        assert '<option value="411302" selected>411302</option>' in picker  # picked, not typed
        rows = page.text.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
        assert rows.count("<tr>") == 1
        assert mask_identity_number(noticed) in rows and "光武社区" in rows
        assert "张三明" not in page.text and "张*明" in rows  # the name masked as well
        assert noticed not in page.text and waiting not in page.text
        assert mask_identity_number(waiting) not in page.text  # still applied: not noticed
        assert other.status_code == 404  # another city: not the county's to see
        assert "@page { size: A4" in css and "@media print" in css

    def test_the_card_shows_each_measure_with_its_amount_and_clause(
        self, checked: dict[str, str], console_idp: ConsoleIdp
    ) -> None:
        console_url = checked["console"]
        stack = Stack(console_url, checked["registry"], console_idp)
        head = identity_number(serial=621, birth=date(1950, 2, 3))
        with httpx.Client(follow_redirects=False, timeout=30) as browser:
            sign_in(browser, stack, "shequ-411302")
            household_id = _file(
                browser,
                console_url,
                head,
                m1_name="张小明",
                m1_id=identity_number(serial=622, birth=date(2015, 6, 1)),
                m1_relation="child",
            )
            file = browser.get(f"{console_url}/households/{household_id}")
            page = browser.get(f"{console_url}/households/{household_id}/card")
        card = httpx.get(
            f"{checked['benefits']}/v1/households/{household_id}/card",
            headers=bearer(_reader_token(console_idp)),
        ).json()

        assert f'href="/households/{household_id}/card"' in file.text
        assert page.status_code == 200, page.text
        assert card["measures"], card  # a 低保 household of two with no income is helped
        for measure in card["measures"]:
            row = page.text.split(f'data-measure="{measure["code"]}">', 1)[1].split("</tr>")[0]
            assert measure["name"] in row
            assert measure["clause"] in row
            assert measure["explanation"] in row
            if not measure["amount_note"] and measure["amount_fen"]:
                assert f'class="amount">{_yuan(measure["amount_fen"])}<' in row
        total = f"每月 {_yuan(card['monthly_fen'])} 元，全年 {_yuan(card['yearly_fen'])} 元"
        assert total in page.text
        assert head not in page.text and mask_identity_number(head) in page.text


@pytest.fixture
def registry_settings(registry_settings: RegistrySettings) -> RegistrySettings:
    """No public-notice wait: the county enrols a household the day its notice starts."""
    return registry_settings.model_copy(update={"notice_days": {"": 0}})


class TestDashboard:
    def test_the_county_sees_counts_progress_overdue_visits_and_departments(
        self, checked: dict[str, str], console_idp: ConsoleIdp
    ) -> None:
        console_url = checked["console"]
        stack = Stack(console_url, checked["registry"], console_idp)
        year = date.today().year
        with (
            httpx.Client(follow_redirects=False, timeout=30) as shequ,
            httpx.Client(follow_redirects=False, timeout=30) as jiedao,
            httpx.Client(follow_redirects=False, timeout=30) as county,
            httpx.Client(follow_redirects=False, timeout=30) as helper,
        ):
            for client, username in (
                (shequ, "shequ-411302"),
                (jiedao, "jiedao-411302"),
                (county, "jiekunban-411302"),
                (helper, "bangfuren-411302"),
            ):
                sign_in(client, stack, username)
            enrolled = _file(shequ, console_url, identity_number(serial=631))
            form = shequ.get(f"{console_url}/households/new")
            laid_off = shequ.post(
                f"{console_url}/households/new",
                data={
                    "csrf": csrf_of(form),
                    "region": "411302",
                    "address": "解放路3号",
                    "category": "layoff",
                    "causes": ["unemployment", "illness"],
                    "m0_name": "刘六",
                    "m0_id": identity_number(serial=632),
                },
            )
            assert laid_off.status_code == 303, laid_off.text
            url = f"{console_url}/households/{enrolled}"
            walked = [_step(shequ, url, "community_review").status_code]
            _plan(jiedao, url)
            walked.append(_step(jiedao, url, "street_review").status_code)
            for step in ("county_approve", "start_notice", "enroll"):
                walked.append(_step(county, url, step).status_code)
            page = shequ.get(url)
            shequ.post(
                f"{url}/helper",
                data={
                    "csrf": csrf_of(page),
                    "id": "bangfuren-411302",
                    "name": "赵帮扶",
                    "unit": "宛城区民政局",
                },
            )
            visited = shequ.post(
                f"{url}/visits",
                data={"csrf": csrf_of(page), "visited_on": f"{year}-01-05", "findings": "在家"},
            )
            home = county.get(f"{console_url}/")
            target = county.post(
                f"{console_url}/dashboard/target",
                data={
                    "csrf": csrf_of(home),
                    "region": "411302",
                    "year": str(year),
                    "share_percent": "50",
                },
            )
            board = county.get(f"{console_url}/dashboard")
            refused = helper.get(f"{console_url}/dashboard")

        assert walked == [303] * 5
        assert visited.status_code == 303, visited.text
        assert target.status_code == 303
        assert board.status_code == 200, board.text
        picker = board.text.split('<select name="region">', 1)[1].split("</select>", 1)[0]
        assert '<option value="411302" selected>411302</option>' in picker  # picked, not typed
        assert "统计看板" in home.text  # the county's navigation links to it
        reader = bearer(console_idp.idp.client_token("dept-4113-reader", "registry:read"))
        stats = httpx.get(
            f"{checked['registry']}/v1/statistics",
            params={"region": "411302", "year": str(year)},
            headers=reader,
        ).json()
        departments = httpx.get(
            f"{checked['verification']}/v1/departments",
            headers=bearer(console_idp.idp.client_token("demo-seeder", "verification:request")),
        ).json()

        def value(chart: str, code: str) -> str:
            section = board.text.split(f'id="{chart}"', 1)[1].split("</section>", 1)[0]
            row = section.split(f'data-code="{code}"', 1)[1].split("</tr>", 1)[0]
            found = re.search(r'class="value">(\d+\+?)<', row)
            assert found, row
            return found.group(1)

        assert 'id="total">2<' in board.text
        assert value("by-status", "enrolled") == "1" and value("by-status", "applied") == "1"
        assert value("by-status", "rejected") == "0"
        assert value("by-category", "dibao") == "1" and value("by-category", "layoff") == "1"
        assert value("by-cause", "illness") == "2" and value("by-cause", "unemployment") == "1"
        assert value("by-cause", "disability") == "0"
        assert "<svg" in board.text and "<script" not in board.text
        progress = next(p for p in stats["progress"] if p["region"] == "411302")
        assert progress["target_share_percent"] == 50
        row = board.text.split('data-region="411302">', 1)[1].split("</tr>", 1)[0]
        assert "<td>50%</td>" in row
        assert f'class="exited">{progress["exited"]}<' in row
        assert f"<td>{progress['enrolled']}</td>" in row
        assert [o["households"] for o in stats["overdue_visits"]] == [1]
        overdue = board.text.split('data-helper="bangfuren-411302">', 1)[1].split("</tr>")[0]
        assert 'class="value">1<' in overdue and "赵*扶" in overdue
        assert board.text.count("data-department=") == len(departments) == 11
        assert "户籍（公安局）" in board.text
        assert refused.status_code == 403
        assert "统计看板供县解困办使用" in refused.text


def _policy(response: httpx.Response) -> dict[str, str]:
    return {
        d.split(" ", 1)[0]: d.split(" ", 1)[1] if " " in d else ""
        for d in (p.strip() for p in response.headers["content-security-policy"].split(";"))
    }


class TestResultsFrame:
    def test_the_frame_reloads_itself_only_while_a_result_is_due(
        self, checked: dict[str, str], console_idp: ConsoleIdp
    ) -> None:
        head = identity_number(serial=611)
        console_url = checked["console"]
        stack = Stack(console_url, checked["registry"], console_idp)
        with httpx.Client(follow_redirects=False, timeout=30) as browser:
            sign_in(browser, stack, "shequ-411302")
            household_id = _file(browser, console_url, head)
            url = f"{console_url}/households/{household_id}"
            page = browser.get(url)
            before = browser.get(f"{url}/results")
            # One department answers in 1 s, so that the 核对 is still running when the frame is
            # read right after the request, however fast the rest of the machine is.
            slow = {"latency_ms": {"fixed": 1000}}
            slowed = browser.put(f"{checked['sandbox']}/admin/departments/tax", json=slow)
            recorded = _request_verification(browser, url, page, head, "授权-2026-611")
            due = browser.get(f"{url}/results")
            landed = _eventually(browser, f"{url}/results", 'id="frame-income"')
            settled = _settled(browser, f"{url}/results")
            file_after = browser.get(url)
            # A second 核对 finds the same income: no new card follows it, and the frame stops
            # reloading as soon as the report is in instead of waiting for one.
            again = _request_verification(browser, url, file_after, head, "授权-2026-611-2")
            again_due = browser.get(f"{url}/results")
            again_settled = _settled(browser, f"{url}/results")

        assert '<iframe class="results" id="results-frame"' in page.text
        assert f'src="/households/{household_id}/results"' in page.text
        file_policy = _policy(page)
        assert file_policy["default-src"] == "'none'"
        assert file_policy["frame-src"] == "'self'"
        assert file_policy["frame-ancestors"] == "'none'"
        assert "script-src" not in file_policy
        assert page.headers["x-frame-options"] == "DENY"

        for frame in (before, due, landed):
            assert frame.status_code == 200
            policy = _policy(frame)
            assert policy["frame-ancestors"] == "'self'"
            assert policy["default-src"] == "'none'"
            assert frame.headers["x-frame-options"] == "SAMEORIGIN"
            assert "<script" not in frame.text
        assert 'id="frame-income"' not in before.text  # no report before the consents
        assert recorded.status_code == 303, recorded.text
        assert slowed.status_code == 200, slowed.text
        # Right after the request the 核对 is queued or running: the frame reloads itself.
        assert '<meta http-equiv="refresh" content="5">' in due.text
        assert 'id="frame-running"' in due.text
        assert 'id="frame-income"' in landed.text
        assert f"/households/{household_id}/report" in landed.text
        assert 'id="frame-running"' not in landed.text
        assert head not in landed.text
        # Once the card resting on the 核对's income is on the file, nothing is due: no reloading.
        assert 'id="frame-card-total"' in settled.text
        assert 'http-equiv="refresh"' not in settled.text
        assert "frame-card-pending" not in settled.text
        # ... and the file's card says so: the income it rests on is the report's.
        verified = re.search(r'id="frame-income">([^<]+)<', landed.text)
        card_income = re.search(r'id="card-income">([^<]+)<', file_after.text)
        assert verified and card_income and card_income[1] == verified[1]
        assert "核对报告第" in file_after.text
        assert again.status_code == 303, again.text
        assert 'id="frame-running"' in again_due.text
        assert 'http-equiv="refresh"' not in again_settled.text
        total = re.search(r'id="frame-card-total">([^<]+)<', settled.text)
        total_again = re.search(r'id="frame-card-total">([^<]+)<', again_settled.text)
        assert total and total_again and total_again[1] == total[1]


def test_a_card_is_due_only_after_a_recent_verification_until_one_rests_on_its_income() -> None:
    now = datetime(2026, 11, 30, 1, 0, tzinfo=UTC)
    verification = {"completed_at": "2026-11-30T00:58:00Z", "per_capita_income_fen": 52000}
    landed = {"status": "applied", "verification": verification}
    assert card_pending(landed, now=now)
    assert not card_pending({"status": "applied", "verification": None}, now=now)
    rests_on_it = {"income_source": "verified", "per_capita_income_fen": 52000}
    assert not card_pending({**landed, "entitlements": rests_on_it}, now=now)
    # A card decided before the report, on the declared income or an earlier report's.
    declared = {"income_source": "declared", "per_capita_income_fen": 52000}
    assert card_pending({**landed, "entitlements": declared}, now=now)
    earlier = {"income_source": "verified", "per_capita_income_fen": 61000}
    assert card_pending({**landed, "entitlements": earlier}, now=now)
    # A report that found no income leaves the declared one standing: no card follows it.
    no_income = {**verification, "per_capita_income_fen": None}
    assert not card_pending({"status": "applied", "verification": no_income}, now=now)
    assert not card_pending(landed, now=now + timedelta(minutes=11))  # it is not coming
    assert not card_pending({**landed, "status": "rejected"}, now=now)


def test_a_verification_that_completed_between_the_frames_two_reads_is_not_running() -> None:
    # The frame reads the newest verification, then the newest report: one that completes in
    # between showed "running" beside its own report (seen under load in the test above).
    running = {"id": "v-2", "status": "running"}
    assert as_of_report(running, {"verification_id": "v-2"}) == {"id": "v-2", "status": "completed"}
    assert as_of_report(running, {"verification_id": "v-1"}) == running  # an older report
    assert as_of_report(running, None) == running
    assert as_of_report(None, None) is None
