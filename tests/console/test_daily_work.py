"""The console's daily work against real processes (the provider, the registry over HTTP):
finding a family by a member's number or name, the region picker, a month's income and
member changes from the file, and the county's queues."""

from __future__ import annotations

import re

import httpx

from shared.identity import mask_identity_number
from tests.console.conftest import Stack, csrf_of, sign_in
from tests.helpers import identity_number


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
