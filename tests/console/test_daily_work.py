"""The console's daily work against real processes (the provider, the registry over HTTP):
finding a family by a member's number or name, the region picker, a month's income and
member changes from the file, and the county's queues."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import httpx
import pytest

from services.registry import service
from services.registry.settings import RegistrySettings
from shared.db import Database
from shared.identity import mask_identity_number
from tests.console.conftest import ConsoleIdp, Stack, csrf_of, running_stack, sign_in
from tests.console.test_app import _step
from tests.helpers import bearer, identity_number


def _file(client: httpx.Client, stack: Stack, *, number: str, name: str = "张三明") -> str:
    """File through the console's form; the household's id."""
    form = client.get(f"{stack.console_url}/households/new")
    answer = client.post(
        f"{stack.console_url}/households/new",
        data={
            "csrf": csrf_of(form),
            "region": "411302",
            "address": "建设路12号",
            "category": "dibao",
            "causes": ["illness"],
            "m0_name": name,
            "m0_id": number,
        },
    )
    assert answer.status_code == 303, answer.text
    return str(answer.headers["location"]).rsplit("/", 1)[-1]


def _search(client: httpx.Client, stack: Stack, typed: str) -> httpx.Response:
    page = client.get(f"{stack.console_url}/households")
    return client.post(
        f"{stack.console_url}/households/search", data={"csrf": csrf_of(page), "q": typed}
    )


def _linked(page: httpx.Response) -> list[str]:
    return re.findall(r'<a href="/households/([0-9a-f-]{36})">', page.text)


class TestSearch:
    def test_a_members_number_finds_the_family_and_is_not_written_back(self, stack: Stack) -> None:
        wanted, other = identity_number(serial=601), identity_number(serial=611)
        with httpx.Client(follow_redirects=False) as browser:
            sign_in(browser, stack, "shequ-411302")
            found_id = _file(browser, stack, number=wanted)
            other_id = _file(browser, stack, number=other)
            # Typed with a lower-case x or spaces around, as people do.
            found = _search(browser, stack, f" {wanted.lower()} ")

        assert found.status_code == 200, found.text
        assert _linked(found) == [found_id]
        assert other_id not in found.text
        assert mask_identity_number(wanted) in found.text
        assert wanted not in found.text  # neither in the row nor echoed into the box
        assert "按身份证号查找：找到 1 户" in found.text

    def test_the_start_of_a_name_finds_every_family_with_such_a_member(self, stack: Stack) -> None:
        with httpx.Client(follow_redirects=False) as browser:
            sign_in(browser, stack, "shequ-411302")
            first = _file(browser, stack, number=identity_number(serial=621), name="欧阳春花")
            second = _file(browser, stack, number=identity_number(serial=631), name="欧阳秋月")
            _file(browser, stack, number=identity_number(serial=641), name="司马光")
            by_family = _search(browser, stack, "欧阳")
            by_name = _search(browser, stack, "欧阳秋月")
            nobody = _search(browser, stack, "诸葛")

        assert _linked(by_family) == [first, second]
        assert "按姓名查找「欧阳」：找到 2 户" in by_family.text
        assert _linked(by_name) == [second]
        assert "欧阳秋月" not in by_name.text.replace('value="欧阳秋月"', "").replace(
            "「欧阳秋月」", ""
        )  # rows show the masked name only
        assert _linked(nobody) == [] and "没有档案。" in nobody.text

    def test_a_wrong_number_or_nothing_typed_is_said_in_chinese(self, stack: Stack) -> None:
        good = identity_number(serial=651)
        wrong = good[:-1] + ("0" if good[-1] != "0" else "1")
        with httpx.Client(follow_redirects=False) as browser:
            sign_in(browser, stack, "shequ-411302")
            refused = _search(browser, stack, wrong)
            empty = _search(browser, stack, "  ")
            page = browser.get(f"{stack.console_url}/households")
            forged = browser.post(
                f"{stack.console_url}/households/search", data={"csrf": "forged", "q": good}
            )

        assert refused.status_code == 422
        assert "身份证号校验位不正确，请核对每一位" in refused.text
        assert wrong not in refused.text
        assert empty.status_code == 422 and "请输入身份证号或姓名。" in empty.text
        assert page.status_code == 200
        assert forged.status_code == 403

    def test_the_region_is_picked_from_the_persons_own_regions(self, stack: Stack) -> None:
        with httpx.Client(follow_redirects=False) as browser:
            sign_in(browser, stack, "shequ-411302")
            _file(browser, stack, number=identity_number(serial=661))
            picked = browser.get(f"{stack.console_url}/households", params={"region": "411302"})

        options = re.findall(r'<option value="(\d+)"( selected)?>', picked.text)
        assert options == [("411302", " selected")]
        assert len(_linked(picked)) == 1


def _version(page: httpx.Response) -> str:
    found = re.search(r'name="version" value="(\d+)"', page.text)
    assert found, page.text[:2000]
    return found.group(1)


class TestMembers:
    def test_a_member_joins_and_leaves_with_the_version_read_and_a_reason(
        self, stack: Stack
    ) -> None:
        newcomer = identity_number(serial=703)
        with httpx.Client(follow_redirects=False) as browser:
            sign_in(browser, stack, "shequ-411302")
            household_id = _file(browser, stack, number=identity_number(serial=701))
            url = f"{stack.console_url}/households/{household_id}"
            read = browser.get(url)
            added = browser.post(
                f"{url}/members",
                data={
                    "csrf": csrf_of(read),
                    "version": _version(read),
                    "name": "李芳",
                    "identity_number": newcomer,
                    "relation": "spouse",
                },
            )
            with_spouse = browser.get(url)
            # The page read before the addition is stale now: its version is refused.
            stale = browser.post(
                f"{url}/members",
                data={
                    "csrf": csrf_of(read),
                    "version": _version(read),
                    "name": "张小明",
                    "identity_number": identity_number(serial=705),
                    "relation": "child",
                },
            )
            spouse_id = re.findall(r'data-member="([^"]+)"', with_spouse.text)[1]
            removal = f"{url}/members/{spouse_id}/remove"
            no_reason = browser.post(
                removal, data={"csrf": csrf_of(with_spouse), "version": _version(with_spouse)}
            )
            removed = browser.post(
                removal,
                data={
                    "csrf": csrf_of(with_spouse),
                    "version": _version(with_spouse),
                    "reason": "迁出",
                },
            )
            after = browser.get(url)

        assert added.status_code == 303, added.text
        assert "<td>李芳</td><td>配偶</td>" in with_spouse.text
        assert mask_identity_number(newcomer) in with_spouse.text
        assert stale.status_code == 409
        assert "这户档案在您打开之后已被他人修改" in stale.text
        assert "张小明" not in stale.text
        assert no_reason.status_code == 422
        assert "移除家庭成员必须填写理由" in no_reason.text
        assert removed.status_code == 303, removed.text
        assert "<td>李芳</td><td>配偶</td>" not in after.text
        assert "已移除家庭成员（迁出）" in after.text
        assert "减少成员" in after.text  # the history line

    def test_a_wrong_number_and_a_second_head_are_said_in_chinese(self, stack: Stack) -> None:
        good = identity_number(serial=711)
        wrong = good[:-1] + ("0" if good[-1] != "0" else "1")
        with httpx.Client(follow_redirects=False) as browser:
            sign_in(browser, stack, "shequ-411302")
            household_id = _file(browser, stack, number=identity_number(serial=721))
            url = f"{stack.console_url}/households/{household_id}"
            answers = []
            for number, relation in ((wrong, "child"), (good, "head")):
                read = browser.get(url)
                answers.append(
                    browser.post(
                        f"{url}/members",
                        data={
                            "csrf": csrf_of(read),
                            "version": _version(read),
                            "name": "张小明",
                            "identity_number": number,
                            "relation": relation,
                        },
                    )
                )

        assert [a.status_code for a in answers] == [422, 422]
        assert "身份证号校验位不正确，请核对每一位" in answers[0].text
        assert "本户已有户主" in answers[1].text


class TestCircumstancesAndDeclarations:
    def test_a_members_circumstances_change_from_the_file_and_reach_the_registry(
        self, stack: Stack
    ) -> None:
        with httpx.Client(follow_redirects=False) as browser:
            sign_in(browser, stack, "shequ-411302")
            household_id = _file(browser, stack, number=identity_number(serial=731))
            url = f"{stack.console_url}/households/{household_id}"
            read = browser.get(url)
            [head_id] = re.findall(
                r'<form method="post" action="[^"]+/members/([^"/]+)" class="member"', read.text
            )
            form = {
                "csrf": csrf_of(read),
                "version": _version(read),
                "hukou_type": "urban",
                "labour_capacity": "partial",
                "employment": "laid_off",
                "labour_contract_months": "0",
                "union_member": "yes",
                "chronic_illness": "on",
                "disability_grade": "2",
                "education_stage": "",
                "boarding": "no",
            }
            changed = browser.post(f"{url}/members/{head_id}", data=form)
            after = browser.get(url)
            stale = browser.post(f"{url}/members/{head_id}", data={**form, "employment": "retired"})
            bad = browser.post(
                f"{url}/members/{head_id}",
                data={**form, "version": _version(after), "labour_contract_months": "九"},
            )
        file = httpx.get(
            f"{stack.registry_url}/v1/households/{household_id}",
            headers=bearer(stack.idp.idp.client_token("dept-411302")),
        ).json()
        [head] = file["members"]

        assert changed.status_code == 303, changed.text
        assert "已更新家庭成员情况：张三明" in after.text
        # This stack runs no verification service: the file still shows, and says what it lacks.
        assert after.status_code == 200
        assert 'id="consents-unavailable"' in after.text
        assert (head["labour_capacity"], head["employment"], head["union_member"]) == (
            "partial",
            "laid_off",
            True,
        )
        assert head["health"] == {
            "major_illness": False,
            "chronic_illness": True,
            "disability_grade": 2,
        }
        assert head["labour_contract_months"] == 0
        assert '<option value="laid_off" selected>下岗</option>' in after.text
        # The page read before the change is stale: a conflict, and the registry keeps 下岗.
        assert stale.status_code == 409
        assert "这户档案在您打开之后已被他人修改" in stale.text
        assert bad.status_code == 422
        assert "劳动合同期限请填 0 到 600 之间的整数（月）" in bad.text

    def test_declared_income_and_assets_are_recorded_and_listed_with_checks_in_chinese(
        self, stack: Stack
    ) -> None:
        with httpx.Client(follow_redirects=False) as browser:
            sign_in(browser, stack, "shequ-411302")
            household_id = _file(browser, stack, number=identity_number(serial=741))
            url = f"{stack.console_url}/households/{household_id}"
            read = browser.get(url)
            head_id = re.findall(r'class="member" data-member="([^"]+)"', read.text)[0]
            base = {"csrf": csrf_of(read), "member_id": head_id}
            wages = browser.post(
                f"{url}/declarations",
                data={
                    **base,
                    "version": _version(read),
                    "item": "wages",
                    "month": "2026-10",
                    "amount_yuan": "1,250.50",
                    "note": "超市理货",
                },
            )
            read = browser.get(url)
            deposits = browser.post(
                f"{url}/declarations",
                data={**base, "version": _version(read), "item": "deposits", "amount_yuan": "3000"},
            )
            read = browser.get(url)
            no_month = browser.post(
                f"{url}/declarations",
                data={**base, "version": _version(read), "item": "pension", "amount_yuan": "900"},
            )
            bad_amount = browser.post(
                f"{url}/declarations",
                data={
                    **base,
                    "version": _version(read),
                    "item": "wages",
                    "month": "2026-10",
                    "amount_yuan": "-5",
                },
            )
            after = browser.get(url)
        declared = httpx.get(
            f"{stack.registry_url}/v1/households/{household_id}/declarations",
            headers=bearer(stack.idp.idp.client_token("dept-411302")),
        ).json()

        assert (wages.status_code, deposits.status_code) == (303, 303), wages.text
        assert [(d["kind"], d["item"], d["month"], d["amount_fen"]) for d in declared] == [
            ("income", "wages", "2026-10", 125050),
            ("asset", "deposits", None, 300000),
        ]
        row = "<td>张三明</td><td>工资性收入</td><td>2026-10</td><td>1250.50</td><td>超市理货</td>"
        assert f'<tr data-item="wages">{row}</tr>' in after.text
        assert '<tr data-item="deposits"><td>张三明</td><td>存款</td>' in after.text
        assert no_month.status_code == 422 and "收入须填写所属月份" in no_month.text
        assert bad_amount.status_code == 422 and "金额请填写元" in bad_amount.text


@dataclass
class County:
    """A stack whose notice period is 0 days, and its three reviewers signed in."""

    stack: Stack
    shequ: httpx.Client
    jiedao: httpx.Client
    county: httpx.Client

    def enrolled(self, *, serial: int, last: str = "enroll") -> str:
        """A household walked through the console up to step `last` (纳入 unless said);
        its file's URL."""
        household_id = _file(self.shequ, self.stack, number=identity_number(serial=serial))
        url = f"{self.stack.console_url}/households/{household_id}"
        assert _step(self.shequ, url, "community_review").status_code == 303
        read = self.jiedao.get(url)
        plan = self.jiedao.post(
            f"{url}/plan",
            data={
                "csrf": csrf_of(read),
                "version": _version(read),
                "group": "medical",
                "measure": "大病医疗救助",
                "lead_department": "区医保局",
            },
        )
        assert plan.status_code == 303, plan.text
        assert _step(self.jiedao, url, "street_review").status_code == 303
        steps = ("county_approve", "start_notice", "enroll")
        for step in steps[: steps.index(last) + 1]:
            assert _step(self.county, url, step).status_code == 303
        return url


@pytest.fixture
def county(
    console_idp: ConsoleIdp, registry_settings: RegistrySettings, tmp_path: Path
) -> Iterator[County]:
    settings = registry_settings.model_copy(update={"notice_days": {"": 0}})
    with (
        running_stack(console_idp, settings, tmp_path) as stack,
        httpx.Client(follow_redirects=False) as shequ,
        httpx.Client(follow_redirects=False) as jiedao,
        httpx.Client(follow_redirects=False) as county,
    ):
        for client, username in (
            (shequ, "shequ-411302"),
            (jiedao, "jiedao-411302"),
            (county, "jiekunban-411302"),
        ):
            sign_in(client, stack, username)
        yield County(stack, shequ, jiedao, county)


def _income(client: httpx.Client, url: str, month: str, yuan: str) -> httpx.Response:
    page = client.get(url)
    return client.post(
        f"{url}/incomes", data={"csrf": csrf_of(page), "month": month, "income_yuan": yuan}
    )


class TestIncomes:
    def test_a_months_income_is_recorded_in_fen_and_a_second_entry_corrects_it(
        self, county: County
    ) -> None:
        url = county.enrolled(serial=801)
        first = _income(county.county, url, "2026-09", "1,250.5")
        recorded = county.county.get(url)
        corrected = _income(county.county, url, "2026-09", "980")
        october = _income(county.county, url, "2026-10", "0.07")
        page = county.county.get(url)

        assert [a.status_code for a in (first, corrected, october)] == [303] * 3
        rows = re.findall(r'<tr data-month="([^"]+)"><td>[^<]+</td><td>([^<]+)</td>', page.text)
        assert rows == [("2026-10", "0.07"), ("2026-09", "980.00")]
        assert "<td>2026-09</td><td>1250.50</td>" in recorded.text
        assert "已登记 2026-10 的月收入：0.07 元" in page.text

    def test_a_bad_amount_or_a_household_not_enrolled_is_said_in_chinese(
        self, county: County
    ) -> None:
        url = county.enrolled(serial=811)
        household_id = _file(county.shequ, county.stack, number=identity_number(serial=821))
        applied = f"{county.stack.console_url}/households/{household_id}"
        answers = [
            _income(county.county, url, "2026-09", "12.345"),
            _income(county.county, url, "2026-13", "100"),
            _income(county.county, applied, "2026-09", "100"),
        ]
        page = county.county.get(url)

        assert [a.status_code for a in answers] == [422, 422, 422]
        assert "月收入请填写金额（元），最多两位小数" in answers[0].text
        assert "请选择月份（年-月）。" in answers[1].text
        assert "已纳入的家庭才能登记月收入" in answers[2].text
        assert "尚未登记月收入。" in page.text


def _queue(home: httpx.Response, key: str) -> list[tuple[str, str]]:
    """(household id, note) of the rows of the county queue `key` on the home page."""
    section = re.search(
        rf'<section class="queue" aria-labelledby="c-{key}">(.*?)</section>', home.text, re.S
    )
    assert section, home.text[:3000]
    return re.findall(
        r'<tr data-household="([^"]+)">.*?<td class="note">([^<]*)</td>', section.group(1), re.S
    )


class TestCountyQueues:
    def test_objections_and_ended_notices_are_queued_for_the_county_with_their_notes(
        self, county: County
    ) -> None:
        ended = county.enrolled(serial=901, last="start_notice")
        objected = county.enrolled(serial=911, last="start_notice")
        objection = _step(county.shequ, objected, "object", comment="群众反映家中有营运车辆")
        county.enrolled(serial=921)  # enrolled: in none of these queues
        home = county.county.get(f"{county.stack.console_url}/")
        shequ_home = county.shequ.get(f"{county.stack.console_url}/")

        assert objection.status_code == 303, objection.text
        today = date.today().isoformat()
        assert _queue(home, "notice-ended") == [(ended.rsplit("/", 1)[-1], f"公示于 {today} 期满")]
        assert _queue(home, "objections") == [
            (objected.rsplit("/", 1)[-1], "群众反映家中有营运车辆")
        ]
        assert _queue(home, "exit-flagged") == []  # enrolled, but benefits flagged none
        assert 'aria-labelledby="c-' not in shequ_home.text  # the county's queues only

    def test_a_household_benefits_flagged_as_able_to_leave_is_queued_for_its_exit(
        self, county: County, registry_settings: RegistrySettings
    ) -> None:
        flagged = county.enrolled(serial=931)
        county.enrolled(serial=941)  # enrolled, not flagged
        asyncio.run(_flag_exit(registry_settings, flagged.rsplit("/", 1)[-1]))
        home = county.county.get(f"{county.stack.console_url}/")

        assert _queue(home, "exit-flagged") == [
            (flagged.rsplit("/", 1)[-1], "收入已达脱困条件（2026-11-02 提示）")
        ]


async def _flag_exit(settings: RegistrySettings, household_id: str) -> None:
    """What the registry does on benefits' `exit.eligible` event (consumers.exit_handler),
    on the stack's database."""
    url, schema = settings.database
    db = Database(url, schema=schema)
    async with db.unit_of_work() as uow:
        flag = {"flagged_at": "2026-11-02T01:00:00+00:00", "household_id": household_id}
        flagged = service.Attachment(household_id, "exit_eligibility", flag, "bangfu.benefits")
        assert await service.attach(uow, [flagged]) == {household_id}
        await uow.commit()
    await db.dispose()
