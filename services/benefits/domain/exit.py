"""脱困 by income: the months in a row, up to the latest, with per-capita income above the standard.

Fengqiu 二(二) and Qinhuangdao 二(一): 家庭人均收入连续6个月超过当地最低生活保障标准; Nanyang
四(四)3: 收入持续稳定超过当地城镇低保标准半年以上. The number of months is a parameter
(`exit.consecutive_months`). Each month is compared with the standard in force on its first day;
a month with no income recorded breaks the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
from numpy.typing import NDArray

from services.benefits.domain.facts import I64, Bools
from services.benefits.domain.parameters import Book

# Where no level sets `exit.consecutive_months` (no shipped region: every province file does),
# the six months every seed document that states a number uses, said to be a default.
DEFAULT_MONTHS = 6


def months_above(
    income: I64,
    size: I64,
    standard: I64,
    known: Bools | None = None,
    *,
    region: NDArray[np.int32] | None = None,
) -> I64:
    """The run of months, up to the latest, with income > standard × size.

    Rows are months (oldest first), columns households: (T, H) arrays, `size` (T, H) or (H,);
    `known` masks out months without a standard or an income (None: all known). With `region`,
    `standard` is (T, R), one column per region, and each household reads its region's.
    """
    months, households = income.shape
    constant_size = size.ndim == 1
    size = np.broadcast_to(size, income.shape)
    running = np.ones(households, dtype=np.bool_)
    run = np.zeros(households, dtype=np.int64)
    line: I64 | None = None  # standard × size, kept while no region's standard changes
    for t in range(months - 1, -1, -1):
        if region is None:
            line = standard[t] * size[t]
        elif line is None or not constant_size or not np.array_equal(standard[t], standard[t + 1]):
            line = standard[t][region] * size[t]
        above = income[t] > line
        if known is not None:
            above &= known[t]
        running &= above
        run += running
    return run


def standards(book: Book, regions: Sequence[str], months: Sequence[str]) -> tuple[I64, Bools]:
    """The standard of each region (rows) in each month (columns), and where one is set."""
    found = [
        [book.resolve(region, _month_start(m)).get("dibao.standard_fen") for m in months]
        for region in regions
    ]
    values = np.array([[int(v.value) if v else 0 for v in row] for row in found], dtype=np.int64)
    known = np.array([[v is not None for v in row] for row in found], dtype=np.bool_)
    return values, known


def required_months(book: Book, regions: Sequence[str], on: date) -> I64:
    """Each region's `exit.consecutive_months` on `on` (DEFAULT_MONTHS where none is set)."""
    values = [book.resolve(region, on).get("exit.consecutive_months") for region in regions]
    return np.array([int(v.value) if v else DEFAULT_MONTHS for v in values], dtype=np.int64)


def exit_batch(
    book: Book,
    *,
    regions: Sequence[str],
    region: NDArray[np.int32],
    income: I64,
    size: I64,
    months: Sequence[str],
    on: date,
) -> tuple[I64, Bools]:
    """Every household's run and whether it meets its region's rule: `income` is (T, H) over
    `months`, `size` (T, H) or (H,); `region` indexes `regions`."""
    table, known = standards(book, regions, months)
    # Every region has a standard every month (the usual case): no mask to gather.
    mask = None if known.all() else known.T[:, region]
    run = months_above(income, size, np.ascontiguousarray(table.T), mask, region=region)
    required = required_months(book, regions, on)
    if (required == required[0]).all():
        return run, run >= required[0]
    return run, run >= required[region]


@dataclass(frozen=True)
class MonthIncome:
    month: str  # YYYY-MM
    income_fen: int
    member_count: int


@dataclass(frozen=True)
class ExitStatus:
    months_above: int
    required: int
    eligible: bool
    latest_month: str | None
    explanation: str


def _month_start(month: str) -> date:
    return date.fromisoformat(month + "-01")


def _months(first: str, last: str) -> list[str]:
    y, m = int(first[:4]), int(first[5:7])
    out = []
    while f"{y:04d}-{m:02d}" <= last:
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def _grounds(book: Book, region: str, on: date) -> str:
    """The clause that sets the months for this region and day: its own document's, or a
    default that says it is one; never a constant naming a document."""
    rule = book.resolve(region, on).get("exit.consecutive_months")
    if rule is None:
        return f"本地区文件未规定,按默认{DEFAULT_MONTHS}个月"
    return rule.grounds(book.names)


def evaluate(book: Book, *, region: str, series: Sequence[MonthIncome], on: date) -> ExitStatus:
    """The household's run so far and whether it meets its region's rule on `on`."""
    required = int(required_months(book, [region], on)[0])
    if not series:
        return ExitStatus(0, required, False, None, "尚无月度收入记录。")
    by_month = {s.month: s for s in series}
    months = _months(min(by_month), max(by_month))
    income = np.array([[by_month[m].income_fen if m in by_month else 0] for m in months])
    size = np.array([[by_month[m].member_count if m in by_month else 1] for m in months])
    recorded = np.array([[m in by_month] for m in months], dtype=np.bool_)
    table, known = standards(book, [region], months)
    table, known = table.T, known.T  # months as rows
    run = int(
        months_above(income.astype(np.int64), size.astype(np.int64), table, known & recorded)[0]
    )
    eligible = run >= required
    explanation = (
        f"截至{months[-1]},家庭人均收入已连续{run}个月超过当月低保标准,"
        f"本地区脱困须连续{required}个月,{'已' if eligible else '尚未'}达到收入条件。"
        f"{_grounds(book, region, on)}。"
    )
    return ExitStatus(run, required, eligible, months[-1], explanation)
