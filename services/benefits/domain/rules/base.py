"""What every rule stands on: parameters spread to households, exact per-household sums,
rounding. Money is int64 fen throughout; every division is an integer one."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

import numpy as np
from numpy.typing import NDArray

from services.benefits.domain.facts import I64, Bools, Columns
from services.benefits.domain.parameters import ROUNDING_CODES, Book, Resolved, Rounding

# 1.1: each rule's clause comes from the region's parameters (`basis.*`), not from the code.
ENGINE_VERSION = "benefits-engine 1.1.0"


class Params:
    """Each parameter's value for each household (0 where unset) and whether it is set.

    Values are kept per region and spread to households only when a rule first reads them.
    """

    def __init__(self, cols: Columns, resolved: list[Resolved], keys: Sequence[str]):
        self.resolved = resolved  # per region of the columns, in `Columns.regions` order
        self._region = cols.region
        self._households = cols.households
        self.per_region: dict[str, I64] = {}
        self._set: dict[str, Bools] = {}
        for key in keys:
            found = [r.get(key) for r in resolved]
            self.per_region[key] = np.array([v.number if v else 0 for v in found], dtype=np.int64)
            self._set[key] = np.array([v is not None for v in found], dtype=np.bool_)
        self._values: dict[str, I64] = {}
        self._present: dict[str, Bools] = {}

    def __getitem__(self, key: str) -> I64:
        if key not in self._values:
            self._values[key] = self.spread(self.per_region[key])
        values: I64 = self._values[key]
        return values

    def spread(self, per_region: NDArray[Any]) -> NDArray[Any]:
        """Per-region values to one per household (a view when every region has the same)."""
        if (per_region == per_region[0]).all():
            return np.broadcast_to(per_region[0], (self._households,))
        spread: NDArray[Any] = per_region[self._region]
        return spread

    def everywhere(self, key: str) -> bool:
        """Whether every region sets the parameter."""
        return bool(self._set[key].all())

    def anywhere(self, key: str) -> bool:
        """Whether any region sets the parameter (else a rule that needs it owes nothing)."""
        return bool(self._set[key].any())

    def has(self, key: str) -> Bools:
        if key not in self._present:
            # Set everywhere (the usual case): a read-only view instead of a gathered copy.
            self._present[key] = (
                np.broadcast_to(np.True_, (self._households,))
                if self._set[key].all()
                else self._set[key][self._region]
            )
        return self._present[key]

    def positive(self, key: str) -> bool:
        """Whether every region sets the value above zero."""
        return bool((self.per_region[key] > 0).all())


def params_for(book: Book, cols: Columns, *, on: date, keys: Sequence[str]) -> Params:
    """Resolve each region once; values reach households when a rule reads them."""
    return Params(cols, [book.resolve(region, on) for region in cols.regions], keys)


Members = NDArray[np.intp]  # row numbers of some members, ascending


def count(cols: Columns, members: Members) -> I64:
    """How many of `members` each household has (exact int64 counts)."""
    return np.bincount(cols.m_household[members], minlength=cols.households).astype(
        np.int64, copy=False
    )


def total(cols: Columns, members: Members, values: I64) -> I64:
    """Each household's sum of `values` (one per member in `members`), exact in int64."""
    out = np.zeros(cols.households, dtype=np.int64)
    if len(members):
        households = cols.m_household[members]
        firsts = np.flatnonzero(np.r_[True, households[1:] != households[:-1]])
        out[households[firsts]] = np.add.reduceat(values, firsts)
    return out


def any_member(cols: Columns, members: Members) -> Bools:
    found: Bools = count(cols, members) > 0
    return found


# Per rule code: whether it rounds to the yuan, and what is added first (99 up, 50 half up).
_TO_YUAN = np.zeros(len(Rounding), dtype=np.bool_)
_OFFSET = np.zeros(len(Rounding), dtype=np.int64)
for _rule, _yuan, _offset in (
    (Rounding.FEN, False, 0),
    (Rounding.UP_YUAN, True, 99),
    (Rounding.DOWN_YUAN, True, 0),
    (Rounding.HALF_UP_YUAN, True, 50),
):
    _TO_YUAN[ROUNDING_CODES[_rule]], _OFFSET[ROUNDING_CODES[_rule]] = _yuan, _offset


def round_fen(p: Params, key: str, amount: I64) -> I64:
    """Apply each household's rounding rule (parameter `key`) to non-negative fen."""
    codes = p.per_region[key]
    if not _TO_YUAN[codes].any():
        return amount
    # A constant divisor (100), not a per-household one: numpy divides by a constant far faster.
    yuan: I64 = (amount + p.spread(_OFFSET[codes])) // 100 * 100
    if _TO_YUAN[codes].all():
        return yuan
    rounded: I64 = np.where(p.spread(_TO_YUAN[codes]), yuan, amount)
    return rounded
