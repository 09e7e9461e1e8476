"""Events the benefits service publishes: `cn.bangfu.benefits.<aggregate>.<name>.v1`.

They carry ids, categories and amounts in fen, never names or identity numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class BenefitsEvent:
    aggregate: ClassVar[str]
    name: ClassVar[str]
    household_id: str


@dataclass(frozen=True)
class EligibilityDetermined(BenefitsEvent):
    """Which categories (对象类别) apply to the household on `as_of`."""

    aggregate: ClassVar[str] = "eligibility"
    name: ClassVar[str] = "determined"
    decision_id: str
    as_of: str
    categories: list[str]


@dataclass(frozen=True)
class EntitlementsDetermined(BenefitsEvent):
    """帮扶措施明白卡: the measures and amounts, the first time for this household."""

    aggregate: ClassVar[str] = "entitlements"
    name: ClassVar[str] = "determined"
    decision_id: str
    as_of: str
    categories: list[str]
    income_source: str
    # The per-capita monthly income the card rests on, and the 核对 report it came from (None
    # when declared): a reader can tell whether a report that landed is already in this card.
    per_capita_income_fen: int
    report_version: int | None
    monthly_fen: int
    yearly_fen: int
    measures: list[dict[str, Any]]


@dataclass(frozen=True)
class EntitlementsChanged(EntitlementsDetermined):
    """The card differs from the one last published (a parameter or the household changed)."""

    name: ClassVar[str] = "changed"


@dataclass(frozen=True)
class ExitEligible(BenefitsEvent):
    """脱困 by income met: the county office decides the exit."""

    aggregate: ClassVar[str] = "exit"
    name: ClassVar[str] = "eligible"
    months_above: int
    required: int
    latest_month: str


@dataclass(frozen=True)
class DuplicateDetected(BenefitsEvent):
    """重复救助: the same need paid twice for the same period."""

    aggregate: ClassVar[str] = "duplicate"
    name: ClassVar[str] = "detected"
    measure: str
    payment_id: str
    earlier_payment_id: str
    departments: list[str]
    period: str
    amount_fen: int


EVENT_TYPES: tuple[type[BenefitsEvent], ...] = (
    EligibilityDetermined,
    EntitlementsDetermined,
    EntitlementsChanged,
    ExitEligible,
    DuplicateDetected,
)
