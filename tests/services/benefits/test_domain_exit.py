"""脱困 by income (封丘二(二), 秦皇岛二(一), 南阳四(四)3): six months above the standard."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from services.benefits.domain import exit
from services.benefits.domain.exit import MonthIncome
from services.benefits.domain.parameters import DEFAULT_DIRECTORY, load_book

BOOK = load_book(DEFAULT_DIRECTORY)


def series(*incomes: int, start: int = 1, size: int = 1, year: int = 2025) -> list[MonthIncome]:
    return [MonthIncome(f"{year}-{start + i:02d}", fen, size) for i, fen in enumerate(incomes)]


def status(s: list[MonthIncome], region: str = "411302") -> exit.ExitStatus:
    return exit.evaluate(BOOK, region=region, series=s, on=date(2025, 12, 31))


class TestExit:
    def test_six_months_above_meets_the_rule(self) -> None:
        got = status(series(63001, 63001, 63001, 63001, 63001, 63001))
        assert (got.months_above, got.required, got.eligible) == (6, 6, True)
        assert got.explanation.endswith(
            "已连续6个月超过当月低保标准,本地区脱困须连续6个月,已达到收入条件。"
            "依据《南阳市城镇困难职工居民解困脱困工作实施方案》(宛政办〔2023〕50号)四(四)3。"
        )

    @pytest.mark.parametrize(
        ("region", "grounds"),
        [
            (
                "410727",
                "依据《封丘县人民政府办公室关于进一步做好城市困难职工解困脱困工作的实施意见》"
                "(封政办〔2019〕20号)二(二)。",
            ),
            (
                "130302",
                "依据《秦皇岛市总工会关于进一步做好困难职工解困脱困工作的实施意见》"
                "(秦工字〔2017〕53号)二(一)。",
            ),
            ("150624", "本地区文件未规定,适用内蒙古自治区默认值(演示值):连续6个月超过低保标准。"),
            (
                "900100",
                "本地区文件未规定,适用占位市(意见原文未载明城市名称)演示值:连续6个月超过低保标准。",
            ),
        ],
    )
    def test_each_region_cites_the_clause_that_sets_its_months(
        self, region: str, grounds: str
    ) -> None:
        """鄂托克旗's plan and the city opinion state no 脱困 rule: a labelled default."""
        got = status(series(80001, 80001, 80001, 80001, 80001, 80001), region=region)
        assert got.eligible and got.explanation.endswith(grounds), got.explanation

    def test_five_months_do_not(self) -> None:
        got = status(series(63001, 63001, 63001, 63001, 63001))
        assert (got.months_above, got.eligible) == (5, False)

    def test_a_month_exactly_at_the_standard_breaks_the_run(self) -> None:
        got = status(series(63001, 63000, 63001, 63001, 63001, 63001, 63001))
        assert got.months_above == 5

    def test_a_month_missing_breaks_the_run(self) -> None:
        got = status([*series(70000, 70000, start=1), *series(70000, 70000, 70000, start=4)])
        assert got.months_above == 3

    def test_per_capita_compares_the_whole_household(self) -> None:
        got = status(series(*[189001] * 6, size=3))
        assert got.months_above == 6
        assert status(series(*[189000] * 6, size=3)).months_above == 0

    def test_each_month_uses_the_standard_in_force_on_its_first_day(self) -> None:
        # 邓州市: 620元 until 2025-07-14, 650元 from 07-15, so August onward needs more than 650.
        got = status(series(63000, 63000, 63000, start=6), region="411381")
        assert (got.latest_month, got.months_above) == ("2025-08", 0)
        assert status(series(63000, 63000, start=6), region="411381").months_above == 2

    def test_the_batch_form_counts_trailing_runs(self) -> None:
        income = np.array([[1, 9, 9], [9, 9, 9], [9, 9, 1]], dtype=np.int64)
        size = np.ones((3, 3), dtype=np.int64)
        std = np.full((3, 3), 5, dtype=np.int64)
        known = np.ones((3, 3), dtype=np.bool_)
        # Rows are months, columns households: transpose the per-household rows above.
        assert exit.months_above(income.T, size.T, std.T, known.T).tolist() == [2, 3, 0]
        assert exit.months_above(income.T, size[:, 0], std.T).tolist() == [2, 3, 0]

    def test_the_batch_agrees_with_one_household_across_a_change_of_standard(self) -> None:
        months = ["2025-05", "2025-06", "2025-07", "2025-08", "2025-09"]
        regions = ["411302", "411381"]  # 邓州市 raises its standard from 2025-07-15
        cases = [
            (0, [63001] * 5, 1),
            (1, [63000] * 5, 1),  # above 620 until July, not above 650 from August
            (1, [130002] * 5, 2),
            (1, [65001] * 5, 1),
            (0, [63001, 63001, 1, 63001, 63001], 1),
        ]
        income = np.array([c[1] for c in cases], dtype=np.int64).T
        size = np.array([c[2] for c in cases], dtype=np.int64)
        region = np.array([c[0] for c in cases], dtype=np.int32)
        run, eligible = exit.exit_batch(
            BOOK,
            regions=regions,
            region=region,
            income=income,
            size=size,
            months=months,
            on=date(2025, 9, 30),
        )
        one = [
            exit.evaluate(
                BOOK,
                region=regions[r],
                series=[MonthIncome(m, fen, n) for m, fen in zip(months, fens, strict=True)],
                on=date(2025, 9, 30),
            ).months_above
            for r, fens, n in cases
        ]
        assert run.tolist() == one == [5, 0, 5, 5, 2]
        assert eligible.tolist() == [False] * 5
