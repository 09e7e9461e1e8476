"""What a department is to the sandbox, and the small helpers its answer functions share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sandbox.people import ChangeKind, Draw, Person

Body = dict[str, Any]

# 省级简称, for plate and certificate numbers.
PROVINCE_ABBREVIATIONS = dict(
    zip(
        "11 12 13 14 15 21 22 23 31 32 33 34 35 36 37 41 42 43 44 45 46 50 51 52 53 54 61 62 63 "
        "64 65 71 81 82".split(),
        "京津冀晋蒙辽吉黑沪苏浙皖闽赣鲁豫鄂湘粤桂琼渝川贵云藏陕甘青宁新台港澳",
        strict=True,
    )
)


@dataclass(frozen=True)
class Department:
    """One department kind: its code, who holds the data, and how it answers for a person."""

    code: str
    name: str
    holder: str
    answer: Callable[[Person], Body]
    # A monthly snapshot: the answer names the month (`snapshot_month`) it describes.
    monthly: bool = False
    # The changes this department publishes on its change feed.
    change_kinds: tuple[ChangeKind, ...] = ()

    def render(self, person: Person) -> Body:
        """The whole answer: the common head, then the department's own fields."""
        body: Body = {
            "department": self.code,
            "as_of": person.as_of.isoformat(),
            "identity_number_masked": person.masked,
        }
        if self.monthly:
            body["snapshot_month"] = month(person.snapshot_month)
        body.update(self.answer(person))
        return body


def iso(day: date | None) -> str | None:
    return day.isoformat() if day else None


def month(day: date) -> str:
    return f"{day:%Y-%m}"


def months_back(last: date, count: int) -> list[date]:
    """The first days of `count` months ending with `last`'s month, oldest first."""
    months = [last.replace(day=1)]
    while len(months) < count:
        months.append((months[-1] - timedelta(days=1)).replace(day=1))
    return months[::-1]


def month_end(first: date) -> date:
    return (first.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)


def yuan(draw: Draw, name: str, low: int, high: int) -> int:
    """An amount in fen, a whole number of yuan between `low` and `high`."""
    return draw.integer(name, low, high) * 100


def province(person: Person) -> str:
    return PROVINCE_ABBREVIATIONS.get(person.region[:2], "")


def alnum(draw: Draw, name: str, count: int) -> str:
    """Upper-case letters and digits (no I or O, as on plates and credit codes)."""
    alphabet = "0123456789ABCDEFGHJKLMNPQRSTUVWXY"
    return "".join(draw.choice(f"{name}.{i}", alphabet) for i in range(count))


def months_between(start: date, end: date) -> int:
    """Calendar months from `start`'s month to `end`'s, both counted (0 if `end` is earlier)."""
    return max(0, (end.year - start.year) * 12 + end.month - start.month + 1)
