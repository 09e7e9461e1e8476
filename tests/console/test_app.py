"""The console over HTTP, signed in through the real provider: cookies, CSRF, CSP, PKCE, pages.

A plain HTTP client plays the browser (the browser tests in test_browser.py do it for real).
"""

from __future__ import annotations

import base64
import concurrent.futures
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from services.console.app import create_app as create_console
from services.console.settings import ConsoleSettings
from services.registry.settings import RegistrySettings
from shared.identity import mask_identity_number
from shared.natsserver import free_port
from shared.settings import SuiteSettings
from tests.conftest import running
from tests.console.conftest import (
    ConsoleIdp,
    Stack,
    console_settings,
    csrf_of,
    for_the_console,
    running_stack,
    sign_in,
)
from tests.helpers import identity_number
from tests.identity.conftest import RunningIdp

COOKIE = "bangfu-console"


def _filing_form(csrf: str, *, number: str, **extra: str) -> dict[str, str | list[str]]:
    return {
        "csrf": csrf,
        "region": "411302",
        "address": "建设路12号",
        "category": "dibao",
        "causes": ["illness"],
        "m0_name": "张三明",
        "m0_id": number,
        **extra,
    }


def _file(client: httpx.Client, stack: Stack, number: str) -> tuple[str, httpx.Response]:
    """File through the console's form; the household's id and its file page."""
    form = client.get(f"{stack.console_url}/households/new")
    answer = client.post(
        f"{stack.console_url}/households/new", data=_filing_form(csrf_of(form), number=number)
    )
    assert answer.status_code == 303, answer.text
    page = client.get(f"{stack.console_url}{answer.headers['location']}")
    household_id = answer.headers["location"].rsplit("/", 1)[-1]
    return household_id, page


class TestHeaders:
    def test_every_page_has_a_policy_that_allows_no_script_and_no_framing(
        self, stack: Stack
    ) -> None:
        response = httpx.get(f"{stack.console_url}/")
        policy = response.headers["content-security-policy"]
        directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
        assert directives["default-src"] == "'none'"
        assert "script-src" not in directives  # default-src 'none' covers it: no script at all
        assert "unsafe-inline" not in policy
        assert directives["frame-ancestors"] == "'none'"
        assert directives["frame-src"] == "'self'"
        assert directives["form-action"] == f"'self' {stack.idp.idp.issuer}"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["cache-control"] == "no-store"
        assert "<script" not in response.text

    def test_the_stylesheet_is_served_and_kept_by_the_browser(self, stack: Stack) -> None:
        response = httpx.get(f"{stack.console_url}/static/console.css")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/css")
        assert "cache-control" not in response.headers


class TestSignIn:
    def test_the_provider_is_asked_for_a_code_with_pkce_s256_state_and_nonce(
        self, stack: Stack
    ) -> None:
        response = httpx.get(f"{stack.console_url}/auth/login")

        assert response.status_code == 303
        location = urlsplit(response.headers["location"])
        assert f"{location.scheme}://{location.netloc}" == stack.idp.idp.issuer
        query = {k: v[0] for k, v in parse_qs(location.query).items()}
        assert query["response_type"] == "code"
        assert query["code_challenge_method"] == "S256"
        assert len(base64.urlsafe_b64decode(query["code_challenge"] + "=")) == 32
        assert len(query["state"]) >= 32 and len(query["nonce"]) >= 32
        assert query["redirect_uri"] == f"{stack.console_url}/auth/callback"
        # Asked for (granted to few), but kept out of the token the pages are read with.
        assert "pii:read" in query["scope"].split()
        cookie = response.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}=")
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
        assert "Secure" not in cookie  # served over http here: see the https test below

    def test_a_person_signs_in_and_gets_a_new_session_id(self, stack: Stack) -> None:
        with httpx.Client(follow_redirects=False) as browser:
            before = browser.get(f"{stack.console_url}/auth/login").cookies[COOKIE]
            browser.cookies.clear()
            home = sign_in(browser, stack, "shequ-411302")
            after = browser.cookies.get(COOKIE)

        assert home.status_code == 200, home.text
        assert "shequ-411302" in home.text
        assert '<span class="role">社区</span>' in home.text
        assert "待初审" in home.text
        assert after and after != before

    def test_a_callback_with_another_state_signs_nobody_in(self, stack: Stack) -> None:
        with httpx.Client(follow_redirects=False) as browser:
            browser.get(f"{stack.console_url}/auth/login")
            answer = browser.get(
                f"{stack.console_url}/auth/callback", params={"code": "x", "state": "forged"}
            )
            home = browser.get(f"{stack.console_url}/")

        assert answer.status_code == 400
        assert "登录验证未通过" in answer.text
        assert "通过统一身份认证登录" in home.text  # still the sign-in page

    def test_a_callback_without_a_sign_in_in_progress_is_refused(self, stack: Stack) -> None:
        answer = httpx.get(f"{stack.console_url}/auth/callback", params={"code": "x", "state": "y"})
        assert answer.status_code == 400
        assert "登录没有完成" in answer.text

    def test_a_page_needing_a_person_sends_the_browser_to_sign_in(self, stack: Stack) -> None:
        answer = httpx.get(f"{stack.console_url}/households/new")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/auth/login?next=/households/new"

    async def test_over_https_the_cookie_is_secure_and_host_only(
        self, console_idp: ConsoleIdp, tmp_path: Path
    ) -> None:
        settings = console_settings(console_idp, "http://127.0.0.1:9", tmp_path)
        settings = settings.model_copy(update={"public_url": "https://console.example.gov.cn"})
        async with running(create_console(settings)) as client:
            response = await client.get("/auth/login")

        cookie = response.headers["set-cookie"]
        assert cookie.startswith("__Host-bangfu-console=")
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
        assert response.headers["strict-transport-security"].startswith("max-age=")

    async def test_a_provider_that_does_not_answer_is_said_plainly(self, tmp_path: Path) -> None:
        settings = ConsoleSettings(
            suite=SuiteSettings(home=tmp_path, auth_issuer=f"http://127.0.0.1:{free_port()}")
        )
        async with running(create_console(settings)) as client:
            response = await client.get("/auth/login")

        assert response.status_code == 503
        assert "统一身份认证服务暂时无法访问" in response.text
        assert "set-cookie" not in response.headers


class TestForms:
    def test_a_form_without_the_sessions_csrf_token_changes_nothing(self, stack: Stack) -> None:
        with httpx.Client(follow_redirects=False) as browser:
            sign_in(browser, stack, "shequ-411302")
            number = identity_number(serial=501)
            forged = browser.post(
                f"{stack.console_url}/households/new",
                data=_filing_form("not-the-token", number=number),
            )
            form = browser.get(f"{stack.console_url}/households/new")
            elsewhere = browser.post(
                f"{stack.console_url}/households/new",
                data=_filing_form(csrf_of(form), number=number),
                headers={"Origin": "https://evil.example"},
            )
            listed = browser.get(f"{stack.console_url}/households")

        assert forged.status_code == 403
        assert elsewhere.status_code == 403
        assert "表单已失效或来源不明" in forged.text
        assert "没有档案" in listed.text

    def test_the_apis_validation_comes_back_in_chinese_beside_the_form(self, stack: Stack) -> None:
        good = identity_number(serial=502)
        wrong_check = good[:-1] + ("0" if good[-1] != "0" else "1")
        with httpx.Client(follow_redirects=False) as browser:
            sign_in(browser, stack, "shequ-411302")
            form = browser.get(f"{stack.console_url}/households/new")
            answer = browser.post(
                f"{stack.console_url}/households/new",
                data=_filing_form(csrf_of(form), number=wrong_check, m0_phone="12"),
            )

        assert answer.status_code == 422
        assert "手机号：格式不正确" in answer.text
        assert 'value="张三明"' in answer.text  # what was typed is kept
        assert "Traceback" not in answer.text and "pydantic" not in answer.text
        # The phone's message stands beside the head's phone field (form row 0).
        row = answer.text.split('id="member-0"', 1)[1].split('id="member-1"', 1)[0]
        assert "手机号：格式不正确" in row

    def test_a_wrong_check_character_is_said_plainly(self, stack: Stack) -> None:
        good = identity_number(serial=503)
        wrong_check = good[:-1] + ("0" if good[-1] != "0" else "1")
        with httpx.Client(follow_redirects=False) as browser:
            sign_in(browser, stack, "shequ-411302")
            form = browser.get(f"{stack.console_url}/households/new")
            answer = browser.post(
                f"{stack.console_url}/households/new",
                data=_filing_form(csrf_of(form), number=wrong_check),
            )

        assert answer.status_code == 422
        assert "身份证号校验位不正确" in answer.text


class TestFile:
    def test_a_filed_household_shows_masked_with_its_history_and_queue_count(
        self, stack: Stack
    ) -> None:
        number = identity_number(serial=504)
        with httpx.Client(follow_redirects=False) as browser:
            sign_in(browser, stack, "shequ-411302")
            household_id, page = _file(browser, stack, number)
            home = browser.get(f"{stack.console_url}/")

        assert page.status_code == 200
        assert "已建档" in page.text
        assert number not in page.text
        assert mask_identity_number(number) in page.text
        assert "建档申请" in page.text  # the history's first line
        assert "已申请（待初审）" in page.text
        assert re.search(r'data-queue="待初审">1<', home.text), home.text
        assert household_id in home.text

    def test_a_step_with_a_stale_version_shows_the_conflict_and_keeps_the_comment(
        self, stack: Stack
    ) -> None:
        with (
            httpx.Client(follow_redirects=False) as first,
            httpx.Client(follow_redirects=False) as second,
        ):
            sign_in(first, stack, "shequ-411302")
            sign_in(second, stack, "shequ-411302")
            household_id, page = _file(first, stack, identity_number(serial=505))
            url = f"{stack.console_url}/households/{household_id}"
            theirs = second.get(url)
            version = re.search(r'name="version" value="(\d+)"', theirs.text)
            assert version
            done = first.post(
                f"{url}/steps",
                data={
                    "csrf": csrf_of(page),
                    "version": version.group(1),
                    "step": "community_review",
                },
            )
            late = second.post(
                f"{url}/steps",
                data={
                    "csrf": csrf_of(theirs),
                    "version": version.group(1),
                    "step": "reject",
                    "comment": "材料不全",
                },
            )

        assert done.status_code == 303
        assert late.status_code == 409
        assert "已被他人修改" in late.text
        assert "材料不全</textarea>" in late.text
        assert "社区已初审（待复核）" in late.text  # the file as it now is

    def test_a_step_the_role_may_not_take_is_refused_in_chinese(self, stack: Stack) -> None:
        with httpx.Client(follow_redirects=False) as browser:
            sign_in(browser, stack, "shequ-411302")
            household_id, page = _file(browser, stack, identity_number(serial=506))
            url = f"{stack.console_url}/households/{household_id}"
            version = re.search(r'name="version" value="(\d+)"', page.text)
            assert version
            browser.post(
                f"{url}/steps",
                data={
                    "csrf": csrf_of(page),
                    "version": version.group(1),
                    "step": "community_review",
                },
            )
            page = browser.get(url)
            version = re.search(r'name="version" value="(\d+)"', page.text)
            assert version
            refused = browser.post(
                f"{url}/steps",
                data={"csrf": csrf_of(page), "version": version.group(1), "step": "street_review"},
            )

        assert refused.status_code == 403
        assert "没有进行这项操作的权限" in refused.text
        assert "社区已初审（待复核）" in refused.text

    def test_rejecting_without_a_reason_is_refused_before_the_api(self, stack: Stack) -> None:
        with httpx.Client(follow_redirects=False) as browser:
            sign_in(browser, stack, "shequ-411302")
            household_id, page = _file(browser, stack, identity_number(serial=507))
            version = re.search(r'name="version" value="(\d+)"', page.text)
            assert version
            answer = browser.post(
                f"{stack.console_url}/households/{household_id}/steps",
                data={"csrf": csrf_of(page), "version": version.group(1), "step": "reject"},
            )

        assert answer.status_code == 422
        assert "必须填写意见" in answer.text
        assert "已申请（待初审）" in answer.text

    def test_the_card_downloads_through_the_console_with_the_persons_token(
        self, stack: Stack
    ) -> None:
        with httpx.Client(follow_redirects=False) as browser:
            sign_in(browser, stack, "shequ-411302")
            household_id, page = _file(browser, stack, identity_number(serial=508))
            assert f"/households/{household_id}/card.xlsx" in page.text
            card = browser.get(f"{stack.console_url}/households/{household_id}/card.xlsx")

        assert card.status_code == 200
        assert card.content[:2] == b"PK"  # an .xlsx is a zip
        assert "attachment" in card.headers["content-disposition"]

    def test_an_assigned_helper_finds_the_household_and_records_a_visit(self, stack: Stack) -> None:
        with (
            httpx.Client(follow_redirects=False) as shequ,
            httpx.Client(follow_redirects=False) as helper,
        ):
            sign_in(shequ, stack, "shequ-411302")
            household_id, page = _file(shequ, stack, identity_number(serial=509))
            url = f"{stack.console_url}/households/{household_id}"
            early = shequ.post(
                f"{url}/visits",
                data={"csrf": csrf_of(page), "visited_on": "2026-01-05", "findings": "x"},
            )
            assigned = shequ.post(
                f"{url}/helper",
                data={
                    "csrf": csrf_of(page),
                    "id": "bangfuren-411302",
                    "name": "赵帮扶",
                    "unit": "宛城区民政局",
                },
            )
            home = sign_in(helper, stack, "bangfuren-411302")
            mine = helper.get(f"{url}")
            future = helper.post(
                f"{url}/visits",
                data={"csrf": csrf_of(mine), "visited_on": "2999-01-01", "findings": "x"},
            )
            recorded = helper.post(
                f"{url}/visits",
                data={
                    "csrf": csrf_of(mine),
                    "visited_on": "2026-01-05",
                    "findings": "家中老人住院，需跟进医疗救助",
                    "follow_up_needed": "yes",
                },
            )
            after = helper.get(url)

        assert early.status_code == 422
        assert "记录走访前须先指定帮扶责任人" in early.text
        assert assigned.status_code == 303
        assert re.search(r'data-queue="我帮扶的家庭">1<', home.text), home.text
        assert future.status_code == 422
        assert "日期不能晚于今天" in future.text
        assert recorded.status_code == 303
        assert "家中老人住院，需跟进医疗救助" in after.text
        assert "赵帮扶（宛城区民政局，编号 bangfuren-411302）" in after.text
        assert "记录走访" in after.text  # the history's line

    def test_a_helper_sees_their_own_queues(self, stack: Stack) -> None:
        with httpx.Client(follow_redirects=False) as browser:
            home = sign_in(browser, stack, "bangfuren-411302")

        assert '<span class="role">帮扶责任人</span>' in home.text
        assert re.search(r'data-queue="我帮扶的家庭">0<', home.text)
        assert re.search(r'data-queue="走访逾期">0<', home.text)

    def test_an_unknown_household_is_a_chinese_page_not_a_trace(self, stack: Stack) -> None:
        with httpx.Client(follow_redirects=False) as browser:
            sign_in(browser, stack, "jiedao-411302")
            answer = browser.get(f"{stack.console_url}/households/no-such-file")

        assert answer.status_code == 404
        assert "没有找到这户档案" in answer.text


def _step(client: httpx.Client, url: str, step: str, **data: str) -> httpx.Response:
    """Take `step` from the file as its page now shows it (its CSRF token and version)."""
    page = client.get(url)
    version = re.search(r'name="version" value="(\d+)"', page.text)
    assert version, page.text[:2000]
    return client.post(
        f"{url}/steps",
        data={"csrf": csrf_of(page), "version": version.group(1), "step": step, **data},
    )


class TestWalk:
    def test_the_county_enrols_and_exits_a_household_the_exit_with_its_kind(
        self, console_idp: ConsoleIdp, registry_settings: RegistrySettings, tmp_path: Path
    ) -> None:
        # A notice period of 0 days: enrolment is allowed the day the notice starts.
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
            household_id, page = _file(shequ, stack, identity_number(serial=510))
            url = f"{stack.console_url}/households/{household_id}"
            walked = [_step(shequ, url, "community_review").status_code]
            version = re.search(r'name="version" value="(\d+)"', jiedao.get(url).text)
            assert version
            plan = jiedao.post(
                f"{url}/plan",
                data={
                    "csrf": csrf_of(page),  # another person's token: refused
                    "version": version.group(1),
                    "group": "medical",
                    "measure": "大病医疗救助",
                    "lead_department": "区医保局",
                },
            )
            assert plan.status_code == 403
            plan = jiedao.post(
                f"{url}/plan",
                data={
                    "csrf": csrf_of(jiedao.get(url)),
                    "version": version.group(1),
                    "group": "medical",
                    "measure": "大病医疗救助",
                    "lead_department": "区医保局",
                },
            )
            assert plan.status_code == 303, plan.text
            walked.append(_step(jiedao, url, "street_review").status_code)
            for step in ("county_approve", "start_notice", "enroll"):
                walked.append(_step(county, url, step).status_code)
            no_kind = _step(county, url, "exit", comment="收入已超过低保标准")
            exited = _step(county, url, "exit", comment="收入已超过低保标准", exit_kind="tuokun")
            final = county.get(url)

        assert walked == [303] * 5
        assert no_kind.status_code == 422
        assert "请选择退出类型" in no_kind.text
        assert exited.status_code == 303
        assert '<span class="status s-exited" id="status">已退出</span>' in final.text
        assert "收入已超过低保标准" in final.text


@pytest.fixture
def short_lived(
    idp_factory: Callable[..., RunningIdp], registry_settings: RegistrySettings, tmp_path: Path
) -> Iterator[tuple[ConsoleIdp, Stack]]:
    """A stack whose provider issues 30-second access tokens: always within the console's
    renewal margin, so every page renews."""
    short = for_the_console(idp_factory(access_token_ttl=30))
    with running_stack(short, registry_settings, tmp_path) as stack:
        yield short, stack


class TestTokens:
    def test_a_short_lived_access_token_is_renewed_with_the_refresh_token(
        self, short_lived: tuple[ConsoleIdp, Stack]
    ) -> None:
        short, stack = short_lived
        with httpx.Client(follow_redirects=False) as browser:
            home = sign_in(browser, stack, "jiedao-411302")
            again = browser.get(f"{stack.console_url}/households")

        assert home.status_code == 200 and again.status_code == 200
        assert "待复核" in home.text
        renewals = short.idp.log.read_text().count("client=bangfu-console grant=refresh_token")
        assert renewals >= 2  # the home page and the list each renewed the token

    def test_requests_renewing_at_once_keep_the_person_signed_in(
        self, short_lived: tuple[ConsoleIdp, Stack]
    ) -> None:
        # The provider ends the whole grant when a refresh token it rotated comes back: pages
        # loaded at once (a tab, the status frame, a form) must take turns with the refresh
        # token, each using the newest.
        short, stack = short_lived
        with httpx.Client(follow_redirects=False) as browser:
            sign_in(browser, stack, "jiedao-411302")
            cookies = {COOKIE: browser.cookies.get(COOKIE, domain="127.0.0.1")}

            def page(_: int) -> int:
                with httpx.Client(follow_redirects=False, cookies=cookies, timeout=30) as tab:
                    return tab.get(f"{stack.console_url}/households").status_code

            with concurrent.futures.ThreadPoolExecutor(6) as tabs:
                answers = list(tabs.map(page, range(12)))
            after = browser.get(f"{stack.console_url}/")

        assert answers == [200] * 12
        assert after.status_code == 200 and "jiedao-411302" in after.text
        log = short.idp.log.read_text()
        assert "client=bangfu-console grant=refresh_token" in log

    def test_a_refused_refresh_token_sends_the_person_to_sign_in_again(
        self, short_lived: tuple[ConsoleIdp, Stack]
    ) -> None:
        short, stack = short_lived
        with httpx.Client(follow_redirects=False) as browser:
            sign_in(browser, stack, "jiedao-411302")
            short.idp.restart()  # grants and refresh tokens lived in its memory: all gone
            answer = browser.get(f"{stack.console_url}/households")

        assert answer.status_code == 303
        assert answer.headers["location"] == "/auth/login?next=/households"


class TestSignOut:
    def test_sign_out_ends_the_session_and_then_the_providers(self, stack: Stack) -> None:
        with httpx.Client(follow_redirects=False) as browser:
            home = sign_in(browser, stack, "jiekunban-411302")
            cookie = browser.cookies[COOKIE]
            refused = browser.post(f"{stack.console_url}/auth/logout", data={"csrf": "wrong"})
            out = browser.post(f"{stack.console_url}/auth/logout", data={"csrf": csrf_of(home)})
            browser.cookies.set(COOKIE, cookie)  # a copy of the old cookie
            after = browser.get(f"{stack.console_url}/households")

        assert refused.status_code == 403
        assert out.status_code == 303
        target = urlsplit(out.headers["location"])
        query = {k: v[0] for k, v in parse_qs(target.query).items()}
        assert out.headers["location"].startswith(f"{stack.idp.idp.issuer}/session/end")
        assert query["post_logout_redirect_uri"] == f"{stack.console_url}/"
        assert query["id_token_hint"].count(".") == 2
        assert (
            'bangfu-console=""' in out.headers["set-cookie"]
            or "Max-Age=0" in out.headers["set-cookie"]
        )
        assert after.status_code == 303  # the old cookie names no session any more
        assert after.headers["location"].startswith("/auth/login")


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\evil"])
def test_after_sign_in_the_browser_goes_only_to_a_console_page(target: str) -> None:
    from services.console.web import local_path

    assert local_path(target) == "/"
    assert local_path("/households/abc") == "/households/abc"
