"""The county ledger (信息台账) and the measures card (帮扶措施明白卡) as .xlsx.

Reading a ledger is pure: rows in, household specs and row-by-row errors (in Chinese) out.
One row per member; rows with the same 户编号 form one household.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import IO, Any
from xml.etree.ElementTree import iterparse

from openpyxl import Workbook, load_workbook
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.datavalidation import DataValidation
from openpyxl.worksheet.worksheet import Worksheet

from shared.identity import InvalidIdentityNumber, parse_identity_number
from shared.regions import InvalidRegion, parse_region

COLUMNS = (
    "户编号",
    "区县代码",
    "地址",
    "类别",
    "致困原因",
    "姓名",
    "身份证号",
    "与户主关系",
    "户口性质",
    "劳动能力",
    "就业状况",
    "手机",
)
REQUIRED = COLUMNS[:8]
MAX_ROWS = 20_000
# An upload is at most 5 MiB, but a zip inflates: what it may unpack to, part by part.
MAX_UNPACKED_BYTES = 64 * 1024 * 1024
MAX_PARTS = 64
MAX_SHARED_STRINGS = MAX_ROWS * len(COLUMNS)
MAX_COLUMNS = 64
# Text starting with one of these is a formula to a spreadsheet (or becomes one when the cell is
# edited): `=HYPERLINK(…)` in an address would send a pii:read export's numbers away.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

CATEGORIES = {
    "特困供养": "tekun",
    "低保": "dibao",
    "低保边缘": "dibao_edge",
    "支出型": "expenditure",
    "意外灾害": "expenditure",
    "农民工": "migrant_worker",
    "下岗": "layoff",
}
CAUSES = {
    "因病": "illness",
    "因残": "disability",
    "因学": "education",
    "因灾": "disaster",
    "意外": "disaster",
    "失业": "unemployment",
    "下岗": "unemployment",
    "欠缴社保": "unpaid_social_insurance",
    "缺乏劳动力": "lack_of_labour",
    "其他": "other",
}
RELATIONS = {
    "户主": "head",
    "配偶": "spouse",
    "子女": "child",
    "父母": "parent",
    "祖父母": "grandparent",
    "孙子女": "grandchild",
    "兄弟姐妹": "sibling",
    "其他": "other",
}
HUKOU = {"城镇": "urban", "农村": "rural"}
LABOUR = {"有": "full", "部分": "partial", "无": "none"}
EMPLOYMENT = {
    "就业": "employed",
    "灵活就业": "flexible",
    "失业": "unemployed",
    "下岗": "laid_off",
    "退休": "retired",
    "学生": "student",
    "非劳动年龄": "not_working_age",
}
_IDENTITY_REASONS = {
    "length": "身份证号长度应为18位",
    "characters": "身份证号含有非法字符",
    "region": "身份证号地区码无效",
    "birth_date": "出生日期不存在",
    "future_birth_date": "出生日期晚于今天",
    "checksum": "身份证号校验位错误",
}

_LABELS = {v: k for k, v in CATEGORIES.items() if k != "意外灾害"}
_RELATION_LABELS = {v: k for k, v in RELATIONS.items()}
_CAUSE_LABELS = {
    "illness": "因病",
    "disability": "因残",
    "education": "因学",
    "disaster": "因灾",
    "unemployment": "失业",
    "unpaid_social_insurance": "欠缴社保",
    "lack_of_labour": "缺乏劳动力",
    "other": "其他",
}


class LedgerUnreadable(ValueError):
    """Not an .xlsx, or without the columns a ledger needs."""


class LedgerTooLarge(LedgerUnreadable):
    """A workbook that would unpack to more than a ledger can be (a zip bomb, or a sheet that
    declares the whole grid)."""


@dataclass(frozen=True)
class RowError:
    row: int
    column: str
    reason: str
    household: str


@dataclass
class LedgerHousehold:
    """One 户编号: its first row, its rows, and the filing built from them (if valid)."""

    key: str
    first_row: int
    rows: list[int] = field(default_factory=list)
    spec: dict[str, Any] | None = None
    errors: list[RowError] = field(default_factory=list)


def read_ledger(content: bytes, *, today: date) -> list[LedgerHousehold]:
    """Parse the workbook into households, each with its spec or its errors."""
    _check_package(content)
    try:
        # Formulas are read as their text (not their cached value), so that they are refused.
        sheet = load_workbook(io.BytesIO(content), read_only=True, data_only=False).active
    except Exception as exc:  # noqa: BLE001 - openpyxl raises many kinds for a bad file
        raise LedgerUnreadable("不是有效的 xlsx 文件") from exc
    _check_dimensions(sheet)
    rows = sheet.iter_rows(values_only=True)
    header = [str(v).strip() if v is not None else "" for v in next(rows, ())]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise LedgerUnreadable(f"缺少列: {'、'.join(missing)}")
    index = {name: header.index(name) for name in COLUMNS if name in header}
    households: dict[str, LedgerHousehold] = {}
    for number, values in enumerate(rows, start=2):
        if number - 1 > MAX_ROWS:
            raise LedgerUnreadable(f"行数超过上限 {MAX_ROWS}")
        cells = {name: _text(values[i] if i < len(values) else None) for name, i in index.items()}
        if not any(cells.values()):
            continue
        key = cells["户编号"] or f"(第{number}行)"
        household = households.setdefault(key, LedgerHousehold(key, number))
        household.rows.append(number)
        formulas = [name for name, text in cells.items() if text.startswith(FORMULA_STARTS)]
        for name in formulas:
            reason = "内容以 = + - @ 或制表符开头，会被当作公式执行，请改为文字"
            household.errors.append(RowError(number, name, reason, key))
        if not formulas:
            _read_row(household, number, cells, today=today)
    for household in households.values():
        _finish(household)
    return list(households.values())


def _check_package(content: bytes) -> None:
    """Refuse a zip that unpacks to more than a ledger can be, before openpyxl inflates it.

    The sizes are those the zip declares: zipfile never inflates a part past its declared size.
    """
    try:
        package = zipfile.ZipFile(io.BytesIO(content))
    except zipfile.BadZipFile as exc:
        raise LedgerUnreadable("不是有效的 xlsx 文件") from exc
    parts = package.infolist()
    if len(parts) > MAX_PARTS:
        raise LedgerTooLarge(f"文件包含 {len(parts)} 个部件，超过上限 {MAX_PARTS}")
    unpacked = sum(part.file_size for part in parts)
    if unpacked > MAX_UNPACKED_BYTES:
        raise LedgerTooLarge(
            f"解压后 {unpacked} 字节，超过上限 {MAX_UNPACKED_BYTES} 字节（疑似压缩炸弹）"
        )
    for part in parts:
        if part.filename.lower().endswith("sharedstrings.xml"):
            with package.open(part) as stream:
                _check_shared_strings(stream)


def _check_shared_strings(stream: IO[bytes]) -> None:
    count = 0
    try:
        for _, element in iterparse(stream, events=("end",)):
            if element.tag.rsplit("}", 1)[-1] == "si":
                count += 1
                if count > MAX_SHARED_STRINGS:
                    raise LedgerTooLarge(
                        f"共享字符串（shared strings）超过 {MAX_SHARED_STRINGS} 个"
                    )
                element.clear()
    except SyntaxError as exc:  # xml.etree.ElementTree.ParseError
        raise LedgerUnreadable("不是有效的 xlsx 文件") from exc


def _check_dimensions(sheet: Any) -> None:
    """Refuse a sheet that declares more rows or columns than a ledger has, then read it by its
    cells, not its declaration (a read-only sheet pads every row to the declared width)."""
    rows, columns = sheet.max_row or 0, sheet.max_column or 0
    if rows > MAX_ROWS + 1 or columns > MAX_COLUMNS:
        raise LedgerTooLarge(
            f"工作表声明的范围 {sheet.calculate_dimension()} 超过上限"
            f"（{MAX_ROWS + 1} 行、{MAX_COLUMNS} 列）"
        )
    sheet.reset_dimensions()


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip(" \t\u3000")


def _read_row(
    household: LedgerHousehold, row: int, cells: Mapping[str, str], *, today: date
) -> None:
    def error(column: str, reason: str) -> None:
        household.errors.append(RowError(row, column, reason, household.key))

    if household.spec is None:
        household.spec = {
            "location": {"region": cells["区县代码"], "address": cells["地址"]},
            "members": [],
            "category": None,
            "causes": set(),
        }
        if not re.fullmatch(r"\d{6}", cells["区县代码"]):
            error("区县代码", "区县代码应为6位数字")
        else:
            try:
                parse_region(cells["区县代码"])
            except InvalidRegion:
                error("区县代码", "区县代码无效")
        if not cells["地址"]:
            error("地址", "地址不能为空")
    elif cells["区县代码"] and cells["区县代码"] != household.spec["location"]["region"]:
        error("区县代码", "同一户的区县代码不一致")
    if cells["类别"]:
        category = CATEGORIES.get(cells["类别"])
        if category is None:
            error("类别", f"未知类别“{cells['类别']}”")
        household.spec["category"] = household.spec["category"] or category
    for label in filter(None, re.split(r"[、,，;；\s]+", cells["致困原因"])):
        cause = CAUSES.get(label)
        if cause is None:
            error("致困原因", f"未知致困原因“{label}”")
        else:
            household.spec["causes"].add(cause)
    member = _member(cells, error, today=today)
    if member:
        household.spec["members"].append(member)


def _member(cells: Mapping[str, str], error: Any, *, today: date) -> dict[str, Any] | None:
    ok = True
    if not cells["姓名"]:
        error("姓名", "姓名不能为空")
        ok = False
    elif len(cells["姓名"]) > 50:
        error("姓名", "姓名超过50个字")
        ok = False
    try:
        number = parse_identity_number(cells["身份证号"], today=today).number
    except InvalidIdentityNumber as exc:
        error("身份证号", _IDENTITY_REASONS.get(exc.reason, "身份证号无效"))
        ok = False
    relation = RELATIONS.get(cells["与户主关系"])
    if relation is None:
        error("与户主关系", f"未知关系“{cells['与户主关系']}”")
        ok = False
    member: dict[str, Any] = {"name": cells["姓名"], "relation": relation}
    for column, key, table in (
        ("户口性质", "hukou_type", HUKOU),
        ("劳动能力", "labour_capacity", LABOUR),
        ("就业状况", "employment", EMPLOYMENT),
    ):
        value = cells.get(column, "")
        if value and value not in table:
            error(column, f"未知{column}“{value}”")
            ok = False
        elif value:
            member[key] = table[value]
    phone = cells.get("手机", "")
    if phone and not re.fullmatch(r"1\d{10}", phone):
        error("手机", "手机号应为11位数字")
        ok = False
    elif phone:
        member["phone"] = phone
    if not ok:
        return None
    member["identity_number"] = number
    return member


def _finish(household: LedgerHousehold) -> None:
    spec = household.spec
    if spec is None:
        return
    numbers = [m["identity_number"] for m in spec["members"]]
    if len(set(numbers)) != len(numbers):
        household.errors.append(
            RowError(household.first_row, "身份证号", "同一户内身份证号重复", household.key)
        )
    heads = [m for m in spec["members"] if m["relation"] == "head"]
    if not household.errors and len(heads) != 1:
        household.errors.append(
            RowError(
                household.first_row,
                "与户主关系",
                "缺少户主" if not heads else "户主多于一人",
                household.key,
            )
        )
    if spec["category"] is None and not any(e.column == "类别" for e in household.errors):
        household.errors.append(RowError(household.first_row, "类别", "缺少类别", household.key))
    if not spec["causes"]:
        household.errors.append(
            RowError(household.first_row, "致困原因", "缺少致困原因", household.key)
        )
    if household.errors:
        household.spec = None


def write_ledger(households: Iterable[Mapping[str, Any]]) -> bytes:
    """A ledger workbook: one row per member, in the columns `read_ledger` reads."""
    book = Workbook()
    sheet = book.active
    sheet.title = "信息台账"
    _append(sheet, COLUMNS)
    for household in households:
        for member in household["members"]:
            _append(
                sheet,
                [
                    household["id"],
                    household["location"]["region"],
                    household["location"]["address"],
                    _LABELS.get(household["category"], ""),
                    "、".join(_CAUSE_LABELS.get(c, c) for c in household["causes"]),
                    member["name"],
                    member["identity_number"],
                    _RELATION_LABELS.get(member["relation"], ""),
                    {v: k for k, v in HUKOU.items()}.get(member["hukou_type"], ""),
                    {v: k for k, v in LABOUR.items()}.get(member["labour_capacity"], ""),
                    {v: k for k, v in EMPLOYMENT.items()}.get(member["employment"], ""),
                    member["phone"] or "",
                ],
            )
    return _save(book)


# The template's drop-down lists: what each of these columns accepts, in the ledger's words.
_TEMPLATE_CHOICES = {
    "类别": [k for k in CATEGORIES if k != "意外灾害"],
    "与户主关系": list(RELATIONS),
    "户口性质": list(HUKOU),
    "劳动能力": list(LABOUR),
    "就业状况": list(EMPLOYMENT),
}
_TEMPLATE_NOTES = (
    ("户编号", "同一户的成员填同一个编号（本台账内自编，如 A001），户主一行填与户主关系「户主」"),
    ("区县代码", "本区县的 GB/T 2260 六位行政区划代码"),
    ("致困原因", f"可填多个，用「、」分开：{'、'.join(_CAUSE_LABELS.values())}"),
    ("身份证号", "18 位，按文本填写（末位可为 X）"),
    ("手机", "11 位手机号，可不填"),
    ("必填列", "、".join(REQUIRED)),
)


def ledger_template() -> bytes:
    """An empty ledger to fill in: the columns `read_ledger` reads, drop-down lists where a
    column takes one of a list, and a second sheet saying how to fill the rest (only the
    first sheet is read on import)."""
    book = Workbook()
    sheet = book.active
    sheet.title = "信息台账"
    _append(sheet, COLUMNS)
    for name, choices in _TEMPLATE_CHOICES.items():
        column = get_column_letter(COLUMNS.index(name) + 1)
        listed = DataValidation(
            type="list",
            formula1=f'"{",".join(choices)}"',
            allow_blank=True,
            showErrorMessage=True,
            errorTitle=name,
            error=f"请从列表中选择：{'、'.join(choices)}",
        )
        listed.add(f"{column}2:{column}{MAX_ROWS + 1}")
        sheet.add_data_validation(listed)
    for name in ("户编号", "区县代码", "身份证号", "手机"):  # text, so leading zeros and X stay
        column = get_column_letter(COLUMNS.index(name) + 1)
        sheet.column_dimensions[column].number_format = "@"
    notes = book.create_sheet("填写说明")
    _append(notes, ["列", "说明"])
    for row in _TEMPLATE_NOTES:
        _append(notes, row)
    return _save(book)


def write_card(household: Mapping[str, Any], *, today: date) -> bytes:
    """帮扶措施明白卡: the household, its plan, its helper and the measures benefits found."""
    book = Workbook()
    sheet = book.active
    sheet.title = "帮扶措施明白卡"
    head = next((m for m in household["members"] if m["relation"] == "head"), None)
    _append(sheet, ["帮扶措施明白卡"])
    _append(
        sheet,
        [
            "户主",
            head["name"][:1] + "*" * max(len(head["name"]) - 1, 1) if head else "",
            "身份证号",
            head["identity_number"] if head else "",
        ],
    )
    _append(
        sheet,
        [
            "地址",
            household["location"]["address"],
            "类别",
            _LABELS.get(household["category"], household["category"]),
        ],
    )
    helper = household.get("helper")
    _append(sheet, ["帮扶责任人", f"{helper['name']}（{helper['unit']}）" if helper else "未确定"])
    _append(sheet, [])
    _append(sheet, ["帮扶计划", "措施", "牵头单位", "状态"])
    for measure in household["plan"]:
        _append(
            sheet,
            [measure["group"], measure["measure"], measure["lead_department"], measure["status"]],
        )
    _append(sheet, [])
    entitlements = household.get("entitlements")
    _append(sheet, ["应享受的帮扶措施"])
    if not entitlements:
        _append(sheet, ["待测算"])
    else:
        for item in entitlements.get("measures", []):
            _append(
                sheet,
                [
                    item.get("measure"),
                    item.get("amount_fen"),
                    item.get("department"),
                    item.get("explanation"),
                ],
            )
    _append(sheet, [])
    _append(sheet, [f"打印日期：{today.isoformat()}"])
    return _save(book)


def _append(sheet: Worksheet, values: Sequence[Any]) -> None:
    """Append a row; text that a spreadsheet would run as a formula is written as text."""
    sheet.append(values)
    for cell in sheet[sheet.max_row]:
        if isinstance(cell.value, str) and cell.value.startswith(FORMULA_STARTS):
            cell.data_type = "s"  # openpyxl made it a formula ("f") for a leading "="
            cell.quotePrefix = True  # and Excel keeps it text when the cell is edited


def _save(book: Workbook) -> bytes:
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def summary(households: Sequence[LedgerHousehold]) -> dict[str, int]:
    return {"households": len(households), "rows": sum(len(h.rows) for h in households)}
