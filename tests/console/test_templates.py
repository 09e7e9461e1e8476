"""The file page's results from other services (核对, 明白卡), rendered from bodies shaped as the
registry stores them (its consumers of verification's and benefits' events)."""

from __future__ import annotations

from typing import Any

from services.console.app import templates
from services.console.sessions import Person


def _file(**results: Any) -> dict[str, Any]:
    return {
        "id": "h-1",
        "version": 3,
        "status": "community_reviewed",
        "allowed_steps": ["street_review", "reject"],
        "location": {"region": "411302", "address": "建设路12号"},
        "hukou_type": "urban",
        "category": "dibao",
        "causes": ["illness"],
        "members": [
            {
                "name": "张三明",
                "relation": "head",
                "identity_number": "411302***********7",
                "sex": "male",
                "birth_year": 1980,
                "labour_capacity": "partial",
                "phone": None,
            }
        ],
        "plan": [],
        "helper": None,
        "verification": None,
        "entitlements": None,
        **results,
    }


def _render(body: dict[str, Any]) -> str:
    person = Person("jiedao-411302", "jiedao-411302", frozenset({"registry:write"}), ("411302",))
    return (
        templates()
        .env.get_template("household.html")
        .render(
            h=body, version="3", history=[], visits=[], person=person, csrf="t", flash=[], today=""
        )
    )


class TestResults:
    def test_a_verification_needing_review_is_highlighted_in_chinese(self) -> None:
        page = _render(
            _file(
                verification={
                    "completed_at": "2026-11-30T00:27:05.881310+00:00",
                    "per_capita_income_fen": 5250,
                    "asset_verdicts": {"deposits_per_capita": "fail", "vehicles": "pass"},
                    "discrepancies": [{"field": "wages"}, {"field": "pension"}],
                    "unavailable_departments": ["tax"],
                    "needs_review": True,
                }
            )
        )

        assert "2026-11-30 00:27:05" in page
        assert "52.50 元/月" in page
        assert '<span class="warn">人均存款：不符合</span>' in page
        assert "车辆：符合" in page
        assert "2 项" in page and "税务（税务局）" in page  # the department said, not its code
        assert "核对结果需要人工复查" in page
        assert "部分丧失劳动能力" in page

    def test_the_card_lists_each_measure_with_its_amount_or_note(self) -> None:
        page = _render(
            _file(
                entitlements={
                    "determined_at": "2026-11-30T00:27:05.981109+00:00",
                    "monthly_fen": 57750,
                    "yearly_fen": 693000,
                    "measures": [
                        {
                            "name": "低保金",
                            "department": "民政局",
                            "period": "month",
                            "amount_fen": 57750,
                            "quantity": None,
                            "unit": None,
                            "amount_note": None,
                        },
                        {
                            "name": "医疗救助",
                            "department": "医保局",
                            "period": "year",
                            "amount_fen": 0,
                            "quantity": None,
                            "unit": None,
                            "amount_note": "金额按当地标准",
                        },
                    ],
                }
            )
        )

        assert "每月合计 577.50 元，全年 6930.00 元" in page
        assert "<td>577.50</td>" in page and "<td>每月</td>" in page
        assert "金额按当地标准" in page and "<td>0.00</td>" not in page

    def test_a_file_without_results_says_so(self) -> None:
        page = _render(_file())
        assert "尚无核对结果" in page
        assert "尚未测算帮扶措施" in page
