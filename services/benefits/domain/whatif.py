"""What-if: the same households under today's parameters and under a proposed value.

"If the standard becomes X from D": households entering and leaving each category, the budget
by measure and by department (monthly and yearly), and the back-pay owed from D. The batch
rules are the card's rules; nothing here re-states a rule.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date

import numpy as np

from services.benefits.domain import rules
from services.benefits.domain.facts import I64, Columns, subset
from services.benefits.domain.parameters import Book


@dataclass(frozen=True)
class Budget:
    monthly_fen: int
    yearly_fen: int


@dataclass(frozen=True)
class WhatIf:
    households: int
    entering: dict[str, int]
    leaving: dict[str, int]
    changed_band: int  # households whose set of categories changed
    changed_amount: int  # households whose monthly amount changed
    by_measure: dict[str, tuple[Budget, Budget]]  # before, after
    by_department: dict[str, tuple[Budget, Budget]]
    monthly_delta_fen: int
    yearly_delta_fen: int
    backpay_fen: int


def _monthly(result: rules.Result) -> I64:
    """Each household's monthly cash from the monthly measures."""
    total = np.zeros(len(next(iter(result.categories.values()))), dtype=np.int64)
    for m in rules.MEASURES:
        if m.period is rules.Period.MONTH:
            total += result.amounts[m.code].fen
    return total


def _budget(period: rules.Period, fen: int) -> Budget:
    if period is rules.Period.MONTH:
        return Budget(fen, fen * 12)
    return Budget(0, fen)


def backpay(delta_monthly: I64, *, start: date, until: date) -> int:
    """Monthly differences owed from `start` to `until`: whole months, plus the first month's
    remaining days pro rata (each household's share rounded down to the fen)."""
    if until < start:
        return 0
    days_in_month = calendar.monthrange(start.year, start.month)[1]
    first_days = days_in_month - start.day + 1
    whole = (until.year - start.year) * 12 + until.month - start.month
    first = int((delta_monthly * first_days // days_in_month).sum())
    return first + int(delta_monthly.sum()) * whole


def diff(before: Book, after: Book, cols: Columns, *, on: date, until: date) -> WhatIf:
    """Evaluate `cols` under both books on `on` and compare.

    Only the households of regions whose parameters differ between the books are evaluated
    again; everyone else's card is the same under both.
    """
    rb = rules.evaluate(cols, rules.params_for(before, cols, on=on, keys=rules.ALL_KEYS))
    moved = np.array(
        [before.resolve(r, on).digest() != after.resolve(r, on).digest() for r in cols.regions]
    )
    reached = moved[cols.region]
    rows = np.flatnonzero(reached)
    part = subset(cols, reached)
    ra = rules.evaluate(part, rules.params_for(after, part, on=on, keys=rules.ALL_KEYS))
    band = np.zeros(len(rows), dtype=np.bool_)
    entering, leaving = {}, {}
    for c in rules.Category:
        b, a = rb.categories[c][rows], ra.categories[c]
        entering[c.value] = int(np.count_nonzero(a & ~b))
        leaving[c.value] = int(np.count_nonzero(b & ~a))
        band |= a != b
    by_measure: dict[str, tuple[Budget, Budget]] = {}
    by_department: dict[str, tuple[Budget, Budget]] = {}
    for m in rules.MEASURES:
        everyone = int(rb.amounts[m.code].fen.sum())
        others = everyone - int(rb.amounts[m.code].fen[rows].sum())
        pair = (
            _budget(m.period, everyone),
            _budget(m.period, others + int(ra.amounts[m.code].fen.sum())),
        )
        by_measure[m.code] = pair
        old = by_department.get(m.department, (Budget(0, 0), Budget(0, 0)))
        by_department[m.department] = (
            Budget(
                old[0].monthly_fen + pair[0].monthly_fen, old[0].yearly_fen + pair[0].yearly_fen
            ),
            Budget(
                old[1].monthly_fen + pair[1].monthly_fen, old[1].yearly_fen + pair[1].yearly_fen
            ),
        )
    delta = _monthly(ra) - _monthly(rb)[rows]
    return WhatIf(
        households=cols.households,
        entering=entering,
        leaving=leaving,
        changed_band=int(np.count_nonzero(band)),
        changed_amount=int(np.count_nonzero(delta)),
        by_measure=by_measure,
        by_department=by_department,
        monthly_delta_fen=sum(p[1].monthly_fen - p[0].monthly_fen for p in by_measure.values()),
        yearly_delta_fen=sum(p[1].yearly_fen - p[0].yearly_fen for p in by_measure.values()),
        backpay_fen=backpay(delta, start=on, until=until),
    )
