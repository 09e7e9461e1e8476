"""When follow-up is due: monthly visits (走访), the end of 公示, rechecks (复核).

Each enrolled household must be visited at least once a calendar month (Nanyang §五(四),
Qinhuangdao §三(一): 每月至少入户走访一次). For each month (a *period*, `YYYY-MM`) two schedules:
`visit_due` reminds the helper some days before the month ends if nobody has visited yet, and
`visit_overdue` tells the county office N days after the month ended if still nobody has.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, timedelta

VISIT_DUE = "visit_due"
VISIT_OVERDUE = "visit_overdue"
NOTICE_ENDED = "notice_ended"
RECHECK_DUE = "recheck_due"
KINDS = (VISIT_DUE, VISIT_OVERDUE, NOTICE_ENDED, RECHECK_DUE)


@dataclass(frozen=True)
class Due:
    """One schedule to store: fire `kind` for a household's `period` on `on`."""

    kind: str
    period: str
    on: date


def period_of(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def month_bounds(period: str) -> tuple[date, date]:
    year, month = (int(x) for x in period.split("-"))
    return date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])


def next_period(period: str) -> str:
    _, last = month_bounds(period)
    return period_of(last + timedelta(days=1))


def visit_schedules(period: str, *, reminder_days: int, overdue_days: int) -> list[Due]:
    """The month's reminder (before it ends) and its overdue check (after it ended)."""
    first, last = month_bounds(period)
    return [
        Due(VISIT_DUE, period, max(first, last - timedelta(days=reminder_days))),
        Due(VISIT_OVERDUE, period, last + timedelta(days=overdue_days)),
    ]


def visited_in(period: str, last_visit_on: date | None) -> bool:
    """Whether the latest recorded visit falls in the period (or after it: a late visit counts)."""
    if last_visit_on is None:
        return False
    first, _ = month_bounds(period)
    return last_visit_on >= first


def notice_schedule(notice_ends_on: date) -> Due:
    """公示 over: the county office may enrol the day after it ends."""
    return Due(NOTICE_ENDED, notice_ends_on.isoformat(), notice_ends_on + timedelta(days=1))


def recheck_schedule(since: date, *, interval_days: int) -> Due:
    """The next 复核 of an enrolled household's circumstances."""
    on = since + timedelta(days=interval_days)
    return Due(RECHECK_DUE, on.isoformat(), on)
