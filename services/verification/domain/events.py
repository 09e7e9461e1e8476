"""Events the verification service publishes: `cn.bangfu.verification.<aggregate>.<name>.v1`.

They carry ids, figures and verdicts, never identity numbers: integrators read the report over
REST when they need more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class VerificationEvent:
    aggregate: ClassVar[str] = "verification"
    name: ClassVar[str]
    verification_id: str
    household_id: str | None


@dataclass(frozen=True)
class VerificationRequested(VerificationEvent):
    """A check was asked for, by a caller or by an event (applied, changed, recheck …)."""

    name: ClassVar[str] = "requested"
    trigger: str
    purpose: str
    departments: tuple[str, ...]
    batch_id: str | None


@dataclass(frozen=True)
class VerificationCompleted(VerificationEvent):
    """A report version exists: the summary the registry and benefits act on."""

    name: ClassVar[str] = "completed"
    report_version: int
    content_hash: str
    per_capita_income_fen: int
    income_complete: bool
    asset_verdicts: dict[str, str]
    discrepancies: tuple[dict[str, Any], ...]
    unavailable_departments: tuple[str, ...]
    no_consent_departments: tuple[str, ...]


@dataclass(frozen=True)
class VerificationFailed(VerificationEvent):
    """No report could be made: the household is unknown, or nothing could be asked."""

    name: ClassVar[str] = "failed"
    reason: str


@dataclass(frozen=True)
class BatchProgress:
    """批量核对 progress: done / total / failed, rate and ETA."""

    aggregate: ClassVar[str] = "batch"
    name: ClassVar[str] = "progress"
    batch_id: str
    status: str
    total: int
    done: int
    failed: int
    cancelled: int
    rate_per_second: float
    eta_seconds: float | None


EVENT_TYPES: tuple[type[VerificationEvent | BatchProgress], ...] = (
    VerificationRequested,
    VerificationCompleted,
    VerificationFailed,
    BatchProgress,
)
