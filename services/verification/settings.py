"""Verification settings, from `BANGFU_VERIFICATION_*` variables.

Departments are configuration: where they are, how they are reached (HTTP or NATS request-reply)
and how patiently. Nested values come as JSON, e.g.
`BANGFU_VERIFICATION_DEPARTMENTS='{"tax": {"transport": "nats", "timeout_seconds": 2}}'`.
"""

from typing import ClassVar, Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from services.verification.adapters.client import DepartmentConfig
from services.verification.domain.departments import Department
from services.verification.domain.report import AssetLimits
from shared.identity import DEVELOPMENT_FEED_KEY
from shared.regions import normalize_prefix
from shared.settings import DEFAULT_PORTS, ServiceSettings

Transport = Literal["http", "nats"]


class DepartmentSettings(BaseModel):
    """One department's connection; unset values take the service-wide defaults."""

    transport: Transport | None = None
    base_url: str | None = None
    timeout_seconds: float = 5.0
    concurrency: int = Field(default=8, ge=1)
    retries: int = Field(default=2, ge=0)
    breaker_failures: int = Field(default=5, ge=1)
    breaker_reset_seconds: float = 30.0
    # A household's members in one request (`/queries`); 1 for a department that answers one
    # person a request only.
    people_per_request: int = Field(default=20, ge=1, le=50)


class AssetLimitSettings(BaseModel):
    """A region's asset tests; `source` cites the document and clause that set them."""

    deposits_per_capita_fen: int = Field(ge=0)
    max_properties: int = Field(ge=0)
    max_vehicles: int = Field(ge=0)
    business_capital_fen: int = Field(ge=0)
    source: str = Field(min_length=1)


# Until the benefits service publishes them, the limits are configuration. This default is a
# placeholder a county must replace: the policy documents delegate the figures to local rules.
_DEFAULT_LIMIT = AssetLimitSettings(
    deposits_per_capita_fen=1_512_000,  # 24 months of the 630-yuan standard
    max_properties=1,
    max_vehicles=0,
    business_capital_fen=5_000_000,
    source="配置 BANGFU_VERIFICATION_ASSET_LIMITS (默认值, 以当地低保家庭财产认定办法为准)",
)
# The provinces of the policy documents: Henan (Nanyang, Fengqiu), Hebei (Qinhuangdao), Inner
# Mongolia (Otog Banner).
_DEFAULT_LIMITS = dict.fromkeys(("41", "13", "15"), _DEFAULT_LIMIT)


class VerificationSettings(ServiceSettings):
    service: ClassVar[str] = "verification"
    calls_registry: ClassVar[bool] = True
    model_config = SettingsConfigDict(env_prefix="BANGFU_VERIFICATION_", extra="ignore")

    # Where departments answer by default: the department sandbox of the embedded suite.
    departments_url: str = f"http://127.0.0.1:{DEFAULT_PORTS['sandbox']}"
    departments_transport: Transport = "http"
    departments: dict[Department, DepartmentSettings] = Field(default_factory=dict)
    # NATS for department request-reply; unset means the suite's NATS.
    department_nats_url: str | None = None
    # The key departments use to name a person in their change feeds (HMAC of the number).
    feed_index_key: SecretStr = SecretStr(DEVELOPMENT_FEED_KEY)

    # Households verified at once by one process, and how long a claim holds. A run waits on
    # the departments, the registry read and the report's group write: 64 keep a batch going
    # at the departments' pace (bench/verification.py: 32 held PostgreSQL to 114/s, 64 gave
    # 157/s). The departments' load is bounded by each one's `concurrency`, not by this.
    workers: int = Field(default=64, ge=1)
    lease_seconds: float = 300
    poll_seconds: float = 0.5
    # A verification that fails (raises, or the registry is unreachable) is tried again after
    # this, doubling, at most `max_attempts` times in all; then it ends `failed` with the reason.
    max_attempts: int = Field(default=5, ge=1)
    retry_seconds: float = Field(default=30, gt=0)
    # A department that was unavailable is asked again after this, doubling, for this long.
    refetch_seconds: float = 60
    refetch_give_up_hours: float = 72
    # Enrolled households are checked again after this many days (复核 of 一户一档).
    recheck_days: int = Field(default=365, ge=1)
    recheck_poll_seconds: float = 3600
    # Raw department answers are kept (encrypted) this long, then purged; reports stay.
    raw_answer_retention_days: int = Field(default=90, ge=0)
    # Declared and verified values further apart than this are a discrepancy.
    discrepancy_threshold_fen: int = Field(default=10_000, ge=0)
    # A batch publishes its progress every this many households (and at its end).
    progress_every: int = Field(default=50, ge=1)
    # How often running batches are tallied again (a tally lost to a crash is made up).
    batch_tally_seconds: float = Field(default=5.0, gt=0)
    asset_limits: dict[str, AssetLimitSettings] = Field(default_factory=lambda: _DEFAULT_LIMITS)

    def department_config(self, department: Department) -> DepartmentConfig:
        own = self.departments.get(department, DepartmentSettings())
        return DepartmentConfig(
            code=department.value,
            transport=own.transport or self.departments_transport,
            timeout_seconds=own.timeout_seconds,
            concurrency=own.concurrency,
            retries=own.retries,
            breaker_failures=own.breaker_failures,
            breaker_reset_seconds=own.breaker_reset_seconds,
            people_per_request=own.people_per_request,
        )

    def department_url(self, department: Department) -> str:
        own = self.departments.get(department)
        return (own.base_url if own and own.base_url else None) or self.departments_url

    def limits_for(self, region: str) -> AssetLimits | None:
        """The asset limits of the longest configured prefix of `region`; None if none is."""
        matches = [p for p in self.asset_limits if region.startswith(normalize_prefix(p))]
        if not matches:
            return None
        chosen = self.asset_limits[max(matches, key=lambda p: len(normalize_prefix(p)))]
        return AssetLimits(
            chosen.deposits_per_capita_fen,
            chosen.max_properties,
            chosen.max_vehicles,
            chosen.business_capital_fen,
            source=chosen.source,
        )
