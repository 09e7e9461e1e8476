"""The county ledger in and out of Excel, and the measures card, through the real API."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable

import httpx
import nats
from openpyxl import Workbook, load_workbook

from services.registry.spreadsheets import COLUMNS
from tests.helpers import bearer, identity_number

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def ledger(rows: list[list[object]]) -> bytes:
    book = Workbook()
    sheet = book.active
    sheet.append(list(COLUMNS))
    for row in rows:
        sheet.append(row)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def row(
    key: str, serial: int, relation: str = "户主", name: str = "王芳", **overrides: object
) -> list[object]:
    values = {
        "户编号": key,
        "区县代码": "411302",
        "地址": "建设路1号",
        "类别": "低保",
        "致困原因": "因病、因学",
        "姓名": name,
        "身份证号": identity_number(serial=serial),
        "与户主关系": relation,
        "户口性质": "城镇",
        "劳动能力": "部分",
        "就业状况": "失业",
        "手机": "13800001111",
        **overrides,
    }
    return [values[c] for c in COLUMNS]


def bad_checksum(serial: int) -> str:
    number = identity_number(serial=serial)
    return number[:-1] + ("0" if number[-1] != "0" else "1")


async def upload(
    registry: httpx.AsyncClient,
    token: Callable[..., str],
    content: bytes,
    regions: list[str] | None = None,
) -> httpx.Response:
    return await registry.post(
        "/v1/imports/ledger",
        files={"file": ("台账.xlsx", content, XLSX)},
        headers=bearer(token("registry:write", "registry:read", regions=regions)),
    )


class TestLedgerImport:
    async def test_good_households_land_whole_and_bad_ones_not_at_all(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        content = ledger(
            [
                row("A", 1),
                row("A", 2, "配偶", "李强"),
                row("B", 3, name="𠮷田㐂"),
                row("C", 4),
                row("C", 5, "子女", "张小", 身份证号=bad_checksum(5)),
                row("D", 6, "配偶"),
                row("D", 7, "子女"),
                row("E", 8, 类别="富裕户"),
            ]
        )
        response = await upload(registry, token, content)
        assert response.status_code == 200, response.text
        report = response.json()
        assert report["summary"] == {"households": 5, "rows": 8, "imported": 2, "failed": 3}
        assert sorted(report["imported"]) == ["A", "B"]
        assert report["errors"] == [
            {"row": 6, "column": "身份证号", "reason": "身份证号校验位错误", "household": "C"},
            {"row": 7, "column": "与户主关系", "reason": "缺少户主", "household": "D"},
            {"row": 9, "column": "类别", "reason": "未知类别“富裕户”", "household": "E"},
        ]
        listed = (
            await registry.get("/v1/households", headers=bearer(token("registry:read", "pii:read")))
        ).json()["items"]
        assert len(listed) == 2
        for number in (identity_number(serial=4), identity_number(serial=6)):
            again = await upload(registry, token, ledger([row("X", 0, 身份证号=number)]))
            assert again.json()["summary"]["imported"] == 1  # C and D left nothing behind
        shown = (
            await registry.get(
                f"/v1/households/{report['imported']['B']}", headers=bearer(token("registry:read"))
            )
        ).json()
        assert shown["members"][0]["name"] == "𠮷田㐂"
        assert shown["causes"] == ["education", "illness"]

    async def test_importing_the_same_ledger_twice_files_nobody_twice(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        content = ledger([row("A", 1), row("B", 2)])
        assert (await upload(registry, token, content)).json()["summary"]["imported"] == 2
        again = (await upload(registry, token, content)).json()
        assert again["summary"]["imported"] == 0
        assert {e["reason"] for e in again["errors"]} == {"该人员已在其他在册家庭中"}

    async def test_a_file_that_is_not_a_ledger_is_refused_clearly(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        not_xlsx = await upload(registry, token, b"name,id\n")
        assert not_xlsx.status_code == 422
        assert not_xlsx.json()["detail"] == "不是有效的 xlsx 文件"
        book = Workbook()
        book.active.append(["户编号", "姓名"])
        buffer = io.BytesIO()
        book.save(buffer)
        missing = await upload(registry, token, buffer.getvalue())
        assert "缺少列" in missing.json()["detail"]
        assert "身份证号" in missing.json()["detail"]

    async def test_a_bad_region_or_a_repeated_number_fails_only_its_household(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        content = ledger(
            [
                row("A", 1),
                row("B", 2, 区县代码="991302"),
                row("C", 3),
                row("C", 3, "配偶", "李强"),
                row("D", 4, 户口性质="农村"),
            ]
        )
        report = (await upload(registry, token, content)).json()
        assert sorted(report["imported"]) == ["A", "D"]
        assert [(e["household"], e["column"], e["reason"]) for e in report["errors"]] == [
            ("B", "区县代码", "区县代码无效"),
            ("C", "身份证号", "同一户内身份证号重复"),
        ]
        rural = (
            await registry.get(
                f"/v1/households/{report['imported']['D']}", headers=bearer(token("registry:read"))
            )
        ).json()
        assert rural["hukou_type"] == "rural"

    async def test_a_household_refused_midway_publishes_nothing_and_the_others_their_filing(
        self, registry: httpx.AsyncClient, token: Callable[..., str], nats_url: str
    ) -> None:
        nc = await nats.connect(nats_url)
        applied = await nc.subscribe("bangfu.registry.household.applied.>")
        await upload(registry, token, ledger([row("held", 9)]))
        await applied.next_msg(timeout=5)  # its filing
        report = (
            await upload(registry, token, ledger([row("A", 1), row("X", 9), row("B", 2)]))
        ).json()
        events = [json.loads((await applied.next_msg(timeout=5)).data) for _ in range(2)]
        await asyncio.sleep(0.3)  # a third would have been relayed with the second
        extra = applied.pending_msgs
        await nc.close()
        assert sorted(report["imported"]) == ["A", "B"]
        assert sorted(e["subject"] for e in events) == sorted(report["imported"].values())
        assert extra == 0

    async def test_households_outside_the_callers_regions_are_not_imported(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        report = (await upload(registry, token, ledger([row("A", 1)]), regions=["4101"])).json()
        assert report["summary"]["imported"] == 0
        assert report["errors"][0]["reason"] == "无权在该地区建档"


class TestLedgerTemplate:
    async def test_the_template_lists_each_columns_choices_and_imports_once_filled(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        refused = await registry.get(
            "/v1/imports/ledger/template", headers=bearer(token("registry:read"))
        )
        answer = await registry.get(
            "/v1/imports/ledger/template", headers=bearer(token("registry:write"))
        )
        assert refused.status_code == 403
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == XLSX
        book = load_workbook(io.BytesIO(answer.content))
        sheet = book.worksheets[0]
        assert [c.value for c in sheet[1]] == list(COLUMNS)
        assert sheet.max_row == 1  # no example row that an import would file
        lists = {
            str(v.sqref).split(":")[0][:-1]: v.formula1
            for v in sheet.data_validations.dataValidation
        }
        column = {name: chr(ord("A") + i) for i, name in enumerate(COLUMNS)}
        assert lists[column["与户主关系"]] == '"户主,配偶,子女,父母,祖父母,孙子女,兄弟姐妹,其他"'
        assert lists[column["劳动能力"]] == '"有,部分,无"'
        assert set(lists) == {
            column[c] for c in ("类别", "与户主关系", "户口性质", "劳动能力", "就业状况")
        }
        assert book.sheetnames == ["信息台账", "填写说明"]

        # Filled in as a county would, instructions sheet and all, it imports.
        sheet.append(row("A001", 951))
        sheet.append(row("A001", 952, relation="配偶", name="李强"))
        buffer = io.BytesIO()
        book.save(buffer)
        imported = await upload(registry, token, buffer.getvalue())
        assert imported.status_code == 200, imported.text
        assert list(imported.json()["imported"]) == ["A001"]
        assert imported.json()["errors"] == []


class TestLedgerExportAndCard:
    async def test_export_is_masked_region_confined_and_round_trips_rare_names(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        await upload(registry, token, ledger([row("A", 1, name="𠮷㐂"), row("A", 2, "配偶")]))
        mine = await registry.get(
            "/v1/exports/ledger", params={"region": "4113"}, headers=bearer(token("registry:read"))
        )
        assert mine.headers["content-type"] == XLSX
        rows = list(load_workbook(io.BytesIO(mine.content)).active.iter_rows(values_only=True))
        assert rows[0] == COLUMNS
        assert [(r[5], r[6]) for r in rows[1:]] == [
            ("𠮷㐂", "411302***********" + identity_number(serial=1)[-1]),
            ("王芳", "411302***********" + identity_number(serial=2)[-1]),
        ]
        other = await registry.get(
            "/v1/exports/ledger",
            params={"region": "4113"},
            headers=bearer(token("registry:read", regions=["4101"])),
        )
        assert len(list(load_workbook(io.BytesIO(other.content)).active.iter_rows())) == 1

    async def test_the_measures_card_opens_and_shows_the_plan(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        report = (await upload(registry, token, ledger([row("A", 1)]))).json()
        household_id = report["imported"]["A"]
        await registry.put(
            f"/v1/households/{household_id}/plan",
            json={
                "measures": [
                    {
                        "group": "education",
                        "measure": "义务教育寄宿生生活补助",
                        "lead_department": "教育局",
                    }
                ]
            },
            headers={**bearer(token("registry:write")), "If-Match": '"1"'},
        )
        card = await registry.get(
            f"/v1/households/{household_id}/card.xlsx", headers=bearer(token("registry:read"))
        )
        assert card.status_code == 200
        cells = [
            c
            for r in load_workbook(io.BytesIO(card.content)).active.iter_rows(values_only=True)
            for c in r
            if c
        ]
        assert "帮扶措施明白卡" in cells
        assert "义务教育寄宿生生活补助" in cells
        assert "待测算" in cells
        assert identity_number(serial=1) not in cells

    async def test_a_ledger_over_five_mebibytes_is_413_while_smaller_uploads_pass_the_1_mib_cap(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        too_big = await upload(registry, token, b"x" * (5 * 1024 * 1024 + 1))
        assert too_big.status_code == 413
        two_mib = await upload(registry, token, b"x" * (2 * 1024 * 1024))
        assert two_mib.status_code == 422  # past the body limit; refused as not a workbook
