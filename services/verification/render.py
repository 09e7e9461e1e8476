"""The report as a page a caseworker can print (HTML; the browser prints it to PDF)."""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from services.verification.domain.departments import DEPARTMENTS, Department

_STATUS_ZH = {
    "ok": "已核对",
    "unavailable": "部门未响应",
    "no_consent": "无授权",
    "error": "答复无法读取",
}
_VERDICT_ZH = {"pass": "符合", "fail": "不符合", "unknown": "待核 (部门未响应)"}
_ASSET_TESTS_ZH = {
    "deposits_per_capita": "人均存款及金融资产",
    "properties": "房产套数",
    "vehicles": "机动车",
    "business_capital": "经营性资产 (工商登记)",
}

_environment = Environment(
    loader=PackageLoader("services.verification", "templates"),
    autoescape=select_autoescape(["html", "j2"]),
    undefined=StrictUndefined,
)
_environment.filters["yuan"] = lambda fen: f"{int(fen) // 100:,}.{int(fen) % 100:02d}"
_environment.filters["department_zh"] = lambda code: DEPARTMENTS[Department(code)].name_zh
_environment.filters["status_zh"] = lambda status: _STATUS_ZH.get(status, status)
_environment.filters["verdict_zh"] = lambda verdict: _VERDICT_ZH.get(verdict, verdict)
_environment.filters["asset_test_zh"] = lambda name: _ASSET_TESTS_ZH.get(name, name)


def report_html(body: dict[str, Any]) -> str:
    """核对报告 as HTML, from the stored report body (numbers already masked)."""
    masked = {m["member_id"]: m["identity_number"] for m in body["members"]}
    return _environment.get_template("report.html.j2").render(
        body=body, report=body["report"], masked=masked
    )
