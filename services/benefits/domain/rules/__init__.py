"""Every rule, written once over columns: eligibility categories and the measures of the card.

A rule takes `Columns` (households and members) and `Params` (each parameter's value per
household) and returns integer arrays. The one-household path (`card.py`) runs these on
columns of length 1 and adds the explanation; the batch path runs them on a whole city.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass

from services.benefits.domain.facts import Bools, Columns
from services.benefits.domain.rules.base import ENGINE_VERSION, Params, params_for
from services.benefits.domain.rules.categories import (
    CATEGORY_BASIS,
    CATEGORY_NAMES,
    CATEGORY_RULES,
    ELIGIBILITY_KEYS,
    Categories,
    Category,
    Tests,
)
from services.benefits.domain.rules.measures import (
    AMOUNT_LOCAL,
    MEASURES,
    ORPHAN_MIN_AGE,
    Amounts,
    Measure,
    Period,
    dibao_allowance,
)

__all__ = [
    "ALL_KEYS",
    "AMOUNT_LOCAL",
    "CATEGORY_BASIS",
    "CATEGORY_NAMES",
    "ENGINE_VERSION",
    "MEASURES",
    "ORPHAN_MIN_AGE",
    "Amounts",
    "Categories",
    "Category",
    "Measure",
    "Params",
    "Period",
    "Result",
    "Tests",
    "dibao_allowance",
    "evaluate",
    "params_for",
    "rule_digests",
]

ALL_KEYS = tuple(dict.fromkeys([*ELIGIBILITY_KEYS, *(k for m in MEASURES for k in m.keys)]))


@dataclass
class Result:
    """The batch result: categories and each measure's amounts, per household."""

    categories: dict[Category, Bools]
    amounts: dict[str, Amounts]


def evaluate(cols: Columns, p: Params) -> Result:
    """Every category and measure for every household in `cols`."""
    cats = Categories(cols, p)
    amounts = {m.code: m.rule(cols, p, cats) for m in MEASURES}
    return Result(categories=dict(cats), amounts=amounts)


@functools.cache
def rule_digests() -> dict[str, str]:
    """The hash of each rule (categories and measures), as receipts record them."""
    out = {"categories": _source_digest(Tests, Categories, *CATEGORY_RULES.values())}
    out.update({m.code: m.digest() for m in MEASURES})
    return out


def _source_digest(*functions: Callable[..., object]) -> str:
    body = "".join(inspect.getsource(f) for f in functions) + ENGINE_VERSION
    return hashlib.sha256(body.encode()).hexdigest()
