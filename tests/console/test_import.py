"""台账导入 from the console against real processes (the provider, the registry over HTTP): a
small workbook built here, each household filed whole or refused with its reason in Chinese."""

from __future__ import annotations

import io
import re

import httpx
from openpyxl import Workbook, load_workbook

from services.registry.spreadsheets import COLUMNS
from tests.console.conftest import Stack, csrf_of, sign_in
from tests.helpers import identity_number

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _ledger(rows: list[dict[str, str]]) -> bytes:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(list(COLUMNS))
    for row in rows:
        sheet.append([row.get(column, "") for column in COLUMNS])
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def _row(key: str, serial: int, name: str, relation: str = "户主", **more: str) -> dict[str, str]:
    return {
        "户编号": key,
        "区县代码": "411302",
        "地址": "建设路3号",
        "类别": "低保",
        "致困原因": "因病",
        "姓名": name,
        "身份证号": identity_number(serial=serial),
        "与户主关系": relation,
        **more,
    }


def test_a_ledger_is_imported_with_its_row_by_row_report_in_chinese(stack: Stack) -> None:
    wrong = identity_number(serial=643)
    content = _ledger(
        [
            _row("甲", 641, "吴秀兰"),
            _row("甲", 642, "吴建军", "子女"),
            _row("乙", 643, "郑国华", 身份证号=wrong[:-1] + ("0" if wrong[-1] != "0" else "1")),
            _row("丙", 644, "孙丽", 类别="不知道"),
        ]
    )
    with httpx.Client(follow_redirects=False, timeout=30) as browser:
        sign_in(browser, stack, "shequ-411302")
        form = browser.get(f"{stack.console_url}/imports/ledger")
        files = {"ledger": ("台账.xlsx", content, XLSX)}
        forged = browser.post(
            f"{stack.console_url}/imports/ledger", data={"csrf": "x"}, files=files
        )
        empty = browser.post(f"{stack.console_url}/imports/ledger", data={"csrf": csrf_of(form)})
        unreadable = browser.post(
            f"{stack.console_url}/imports/ledger",
            data={"csrf": csrf_of(form)},
            files={"ledger": ("台账.xlsx", b"not a workbook", XLSX)},
        )
        done = browser.post(
            f"{stack.console_url}/imports/ledger", data={"csrf": csrf_of(form)}, files=files
        )
        imported = re.search(
            r'<tr data-key="甲"><td>甲</td><td><a href="(/households/[^"]+)"', done.text
        )
        assert imported, done.text
        filed = browser.get(f"{stack.console_url}{imported.group(1)}")

    assert form.status_code == 200
    assert 'enctype="multipart/form-data"' in form.text
    assert forged.status_code == 403
    assert empty.status_code == 422
    assert "请选择要导入的台账文件" in empty.text
    assert unreadable.status_code == 422
    assert 'id="import-error"' in unreadable.text

    assert done.status_code == 200, done.text
    assert "共 3 户、4 行：已建档 <strong>1</strong> 户，未导入 <strong>2</strong> 户" in done.text
    refused = re.findall(
        r'class="refused-row" data-row="(\d+)"><td>\d+</td>'
        r"<td>([^<]*)</td><td>([^<]*)</td><td>([^<]+)</td>",
        done.text,
    )
    by_household = {
        household: (int(row), column, reason) for row, household, column, reason in refused
    }
    assert set(by_household) == {"乙", "丙"}
    assert by_household["乙"][0] == 4 and by_household["乙"][1] == "身份证号"
    assert by_household["丙"][0] == 5 and by_household["丙"][1] == "类别"
    for _, _, reason in by_household.values():
        assert re.search(r"[\u4e00-\u9fff]", reason)  # said in Chinese
    assert filed.status_code == 200
    assert "吴秀兰" in filed.text and "吴建军" in filed.text


def test_the_registrys_template_downloads_from_the_import_page(stack: Stack) -> None:
    with httpx.Client(follow_redirects=False, timeout=30) as browser:
        sign_in(browser, stack, "shequ-411302")
        form = browser.get(f"{stack.console_url}/imports/ledger")
        template = browser.get(f"{stack.console_url}/imports/ledger/template.xlsx")

    assert 'href="/imports/ledger/template.xlsx"' in form.text
    assert template.status_code == 200, template.text
    assert template.headers["content-type"] == XLSX
    assert "ledger-template.xlsx" in template.headers["content-disposition"]
    book = load_workbook(io.BytesIO(template.content))
    assert [c.value for c in book.worksheets[0][1]] == list(COLUMNS)
