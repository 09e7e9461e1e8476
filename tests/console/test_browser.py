"""The console in a real browser: Debian's Chromium driven by Playwright, through the real
provider's login page, three people walking one household through review.

Skipped (with the reason) without node, Playwright or Chromium, unless BANGFU_REQUIRE_BROWSER=1,
where that is a failure. Chromium is the system's (`apt-get install chromium`), never one that
Playwright downloads. Screenshots of the main pages are written to BANGFU_CONSOLE_SCREENSHOTS
(default: a directory of the test run's temporary files, logged).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest
from sqlalchemy import update

from services.registry import store
from services.registry.settings import RegistrySettings
from shared.db import Database
from tests.console.conftest import ConsoleIdp, Stack
from tests.console.test_pages import checked as checked  # the fixture, for these tests
from tests.console.test_pages import databases as databases  # the fixture it needs
from tests.helpers import identity_number

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

CHROMIUM = Path(os.environ.get("BANGFU_CHROMIUM", "/usr/bin/chromium"))
# Headless, and nothing that reaches out of the machine (updates, sync, field trials).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
log = logging.getLogger(__name__)


def _require_browser() -> None:
    missing = []
    if not (shutil.which("node") and shutil.which("npm")):
        missing.append("node and npm (the identity provider)")
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install playwright)")
    if not CHROMIUM.exists():
        missing.append(f"Chromium at {CHROMIUM} (apt-get install chromium)")
    if not missing:
        return
    message = "the browser tests need " + ", ".join(missing)
    if os.environ.get("BANGFU_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{message} (BANGFU_REQUIRE_BROWSER=1)")
    pytest.skip(message)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    _require_browser()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        yield chromium
        await chromium.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("BANGFU_CONSOLE_SCREENSHOTS")
    directory = Path(chosen) if chosen else tmp_path_factory.mktemp("console-screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    log.warning("console screenshots in %s", directory)
    return directory


async def _signed_in(browser: Browser, stack: Stack, username: str, **viewport: int) -> Page:
    """A browser context of its own (its own cookies), signed in on the provider's login page."""
    context = await browser.new_context(
        viewport={"width": viewport.get("width", 1366), "height": viewport.get("height", 768)},
        locale="zh-CN",
    )
    context.set_default_timeout(15_000)
    page = await context.new_page()
    await page.goto(f"{stack.console_url}/")
    await page.get_by_role("link", name="通过统一身份认证登录").click()
    await page.fill("input[name=username]", username)
    await page.fill("input[name=password]", stack.idp.password(username))
    await page.get_by_role("button", name="登录 Sign in").click()
    await page.wait_for_url(f"{stack.console_url}/")
    return page


async def _file_household(page: Page, stack: Stack, *, serial: int, name: str) -> str:
    """File a household through the form; the URL of its file."""
    await page.get_by_role("link", name="新建档案").click()
    await page.fill("input[name=address]", "建设路12号")
    await page.get_by_label("因病").check()
    await page.fill("input[name=m0_name]", name)
    await page.fill("input[name=m0_id]", identity_number(serial=serial))
    await page.get_by_role("button", name="提交申请").click()
    await page.get_by_text("已建档").wait_for()
    return page.url


async def _status(page: Page) -> str:
    return await page.inner_text("#status")


async def _end_notice(registry_settings: RegistrySettings, file_url: str) -> None:
    """The 公示's seven days pass: its end moves to today, in the registry's own database."""
    url, schema = registry_settings.database
    db = Database(url, schema=schema)
    household_id = urlsplit(file_url).path.rsplit("/", 1)[1]
    async with db.sessionmaker() as session:
        await session.execute(
            update(store.household)
            .where(store.household.c.id == household_id)
            .values(notice_ends_on=date.today())
        )
        await session.commit()
    await db.dispose()


async def test_three_people_walk_a_household_through_review(
    browser: Browser, stack: Stack, screenshots: Path, registry_settings: RegistrySettings
) -> None:
    shequ = await _signed_in(browser, stack, "shequ-411302")
    assert (await shequ.inner_text(".role")) == "社区"
    await shequ.screenshot(path=screenshots / "home-shequ.png", full_page=True)
    file_url = await _file_household(shequ, stack, serial=601, name="李桂兰")
    await shequ.screenshot(path=screenshots / "household-applied.png", full_page=True)
    await shequ.get_by_role("button", name="初审通过").click()
    await shequ.get_by_text("已完成「初审通过」").wait_for()
    assert await _status(shequ) == "社区已初审（待复核）"

    # 复核 is the street's: the community worker who tries it is refused, the file unchanged.
    await shequ.get_by_role("button", name="复核通过").click()
    refused = await shequ.get_by_role("alert").inner_text()
    assert "没有进行这项操作的权限" in refused
    assert await _status(shequ) == "社区已初审（待复核）"
    await shequ.screenshot(path=screenshots / "refused.png", full_page=True)

    jiedao = await _signed_in(browser, stack, "jiedao-411302")
    assert (await jiedao.inner_text('[data-queue="待复核"]')) == "1"
    # Lists show the head's name masked: the row is found by the file it links to.
    await jiedao.locator(f'a[href="{urlsplit(file_url).path}"]').click()
    assert jiedao.url == file_url
    # 复核 comes with a draft help plan: without one the registry refuses, said in Chinese.
    await jiedao.get_by_role("button", name="复核通过").click()
    assert "须先制定帮扶计划" in await jiedao.locator("#step-error").inner_text()
    await jiedao.select_option("select[name=group]", "medical")
    await jiedao.fill("input[name=measure]", "大病医疗救助")
    await jiedao.fill("input[name=lead_department]", "区医保局")
    await jiedao.get_by_role("button", name="加入计划").click()
    await jiedao.get_by_text("已加入帮扶计划：大病医疗救助").wait_for()
    await jiedao.fill("#comment", "入户核实，情况属实")
    await jiedao.get_by_role("button", name="复核通过").click()
    await jiedao.get_by_text("已完成「复核通过」").wait_for()
    assert await _status(jiedao) == "街道已复核（待审核）"

    county = await _signed_in(browser, stack, "jiekunban-411302")
    assert (await county.inner_text('[data-queue="待审核"]')) == "1"
    await county.screenshot(path=screenshots / "home-county.png", full_page=True)
    await county.locator(f'a[href="{urlsplit(file_url).path}"]').click()
    await county.get_by_role("button", name="审核通过").click()
    await county.get_by_text("已完成「审核通过」").wait_for()
    await county.get_by_role("button", name="开始公示").click()
    await county.get_by_text("已完成「开始公示」").wait_for()
    assert await _status(county) == "公示中"
    history = await county.inner_text("ol.history")
    for step in ("建档申请", "初审通过", "复核通过", "审核通过", "开始公示"):
        assert step in history
    assert "入户核实，情况属实" in history
    await county.screenshot(path=screenshots / "household-noticed.png", full_page=True)

    # The county's dashboard, reached with the keyboard alone, and the 公示 as printed on A4.
    await county.locator("a.brand").focus()
    for _ in range(10):
        await county.keyboard.press("Tab")
        if await county.evaluate("document.activeElement.textContent") == "统计看板":
            break
    await county.keyboard.press("Enter")
    await county.wait_for_url(f"{stack.console_url}/dashboard")
    noticed = county.locator('#by-status tr[data-code="publicly_noticed"] td.value')
    assert await noticed.inner_text() == "1"
    await county.screenshot(path=screenshots / "dashboard-county.png", full_page=True)
    await county.set_viewport_size({"width": 390, "height": 844})
    assert await noticed.is_visible()  # at phone width each bar keeps its number
    await county.screenshot(path=screenshots / "dashboard-phone.png", full_page=True)
    await county.set_viewport_size({"width": 1366, "height": 768})
    await county.get_by_role("link", name="公示", exact=True).click()
    await county.wait_for_url(f"{stack.console_url}/notices/411302")
    assert await county.inner_text("#notice-total") == "1"
    assert "李*兰" in await county.inner_text("table.notice")
    await county.set_viewport_size({"width": 390, "height": 844})
    wide = await county.evaluate("document.documentElement.scrollWidth")
    assert wide <= 390  # nothing pushes the phone-width page sideways
    await county.screenshot(path=screenshots / "notice-phone.png", full_page=True)
    await county.emulate_media(media="print")
    assert not await county.locator("header.top").is_visible()  # printed without the header
    assert await county.locator("table.notice").is_visible()
    await county.pdf(path=str(screenshots / "notice-a4.pdf"), format="A4")
    await county.emulate_media(media="screen")
    await county.set_viewport_size({"width": 1366, "height": 768})

    # Once the notice has ended, 纳入: the household is enrolled.
    await _end_notice(registry_settings, file_url)
    await county.goto(file_url)
    await county.get_by_role("button", name="纳入").click()
    await county.get_by_text("已完成「纳入」").wait_for()
    assert await _status(county) == "已纳入"
    assert "纳入" in await county.inner_text("ol.history")

    # Signing out ends the console's session and, once confirmed, the provider's.
    await county.get_by_role("button", name="退出登录").click()
    await county.get_by_role("button", name="Yes, sign me out").click()
    await county.wait_for_url(f"{stack.console_url}/")
    await county.get_by_role("link", name="通过统一身份认证登录").click()
    assert await county.locator("input[name=username]").is_visible()  # asked to sign in again


async def test_two_browsers_on_one_file_the_second_sees_the_conflict(
    browser: Browser, stack: Stack, screenshots: Path
) -> None:
    first = await _signed_in(browser, stack, "shequ-411302")
    file_url = await _file_household(first, stack, serial=602, name="王建国")
    second = await _signed_in(browser, stack, "shequ-411302", width=390, height=844)
    await second.goto(file_url)

    await first.get_by_role("button", name="初审通过").click()
    await first.get_by_text("已完成「初审通过」").wait_for()
    await second.fill("#comment", "收入材料不全")
    await second.get_by_role("button", name="驳回").click()

    conflict = await second.locator("#step-error").inner_text()
    assert "已被他人修改" in conflict
    assert (await second.input_value("#comment")) == "收入材料不全"  # what they typed is not lost
    assert await _status(second) == "社区已初审（待复核）"  # the file as it now is
    await second.screenshot(path=screenshots / "conflict-phone.png", full_page=True)


async def test_the_report_lands_in_the_frame_and_the_helper_records_a_visit(
    browser: Browser, checked: dict[str, str], console_idp: ConsoleIdp, screenshots: Path
) -> None:
    stack = Stack(checked["console"], checked["registry"], console_idp)
    head = identity_number(serial=621)
    shequ = await _signed_in(browser, stack, "shequ-411302")
    file_url = await _file_household(shequ, stack, serial=621, name="陈秀英")
    await shequ.locator("summary", has_text="指定帮扶责任人").click()
    helper_form = shequ.locator("form.helper")
    await helper_form.locator("input[name=id]").fill("bangfuren-411302")
    await helper_form.locator("input[name=name]").fill("赵帮扶")
    await helper_form.locator("input[name=unit]").fill("宛城区民政局")
    await helper_form.get_by_role("button", name="保存").click()
    await shequ.get_by_text("已指定帮扶责任人：赵帮扶").wait_for()

    consent = shequ.locator("form.consent")
    await consent.locator("input[name=c0_id]").fill(head)
    await consent.locator("input[name=document_ref]").fill("授权-2026-621")
    await consent.get_by_role("button", name="录入并申请核对").click()
    await shequ.get_by_text("已申请核对").first.wait_for()
    # A comment half typed while the departments answer: the frame reloads, the page does not.
    await shequ.fill("#comment", "等核对结果出来再初审")
    frame = shequ.frame_locator("#results-frame")
    await frame.locator("#frame-income").wait_for(timeout=60_000)
    await frame.locator("#frame-card-total").wait_for(timeout=60_000)
    assert await shequ.input_value("#comment") == "等核对结果出来再初审"
    assert shequ.url == file_url
    await shequ.screenshot(path=screenshots / "household-report-landed.png", full_page=True)

    # The helper, through the real provider: the household is theirs, a visit is recorded.
    helper = await _signed_in(browser, stack, "bangfuren-411302", width=390, height=844)
    assert (await helper.inner_text(".role")) == "帮扶责任人"
    assert (await helper.inner_text('[data-queue="我帮扶的家庭"]')) == "1"
    await helper.locator(f'a[href="{urlsplit(file_url).path}"]').first.click()
    visit = helper.locator("form.visit")
    await visit.locator("textarea[name=findings]").fill("老人住院，需跟进医疗救助")
    await visit.locator("input[name=follow_up_needed]").check()
    await visit.get_by_role("button", name="记录走访").click()
    await helper.get_by_text("的走访").first.wait_for()
    visits = await helper.locator("section[aria-labelledby=helper-h] table").text_content()
    assert visits is not None and "老人住院，需跟进医疗救助" in visits
    # At phone width the past findings are there to read, and no column of the file is hidden.
    assert await helper.get_by_role("cell", name="老人住院，需跟进医疗救助").is_visible()
    hidden = await helper.evaluate(
        "[...document.querySelectorAll('main td, main th')]"
        ".filter(c => getComputedStyle(c).display === 'none').length"
    )
    assert hidden == 0
    assert await helper.evaluate("document.documentElement.scrollWidth") <= 390
    await helper.screenshot(path=screenshots / "helper-visit-phone.png", full_page=True)
