"""Request and response bodies of the registry API (money in integer fen)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.registry.domain.household import Category, Cause, Flag, PlanGroup
from services.registry.domain.members import (
    EducationStage,
    Employment,
    HukouType,
    LabourCapacity,
    Relation,
)
from services.registry.domain.workflow import Channel, ExitKind
from shared.registry_client import BATCH_READ_MAX

# Ids and cursors: id-shaped, never text PostgreSQL cannot hold (a NUL answered 500).
ID_PATTERN = r"^[0-9A-Za-z_.:-]{1,64}$"


class _In(BaseModel):
    # An unknown field is an error, so that `status` or an amount cannot be slipped in.
    model_config = ConfigDict(extra="forbid")


class HealthIn(_In):
    major_illness: bool = False
    chronic_illness: bool = False
    disability_grade: int | None = Field(None, ge=1, le=4)


class MemberIn(_In):
    name: str = Field(min_length=1, max_length=60, examples=["张三明"])
    identity_number: str = Field(
        min_length=1,
        max_length=40,
        description="GB 11643 resident identity number",
        examples=["11010519491231002X"],
    )
    relation: Relation
    hukou_type: HukouType = HukouType.URBAN
    labour_capacity: LabourCapacity = LabourCapacity.FULL
    employment: Employment = Employment.UNEMPLOYED
    union_member: bool = False
    labour_contract_months: int | None = Field(None, ge=0, le=600)
    health: HealthIn = HealthIn()
    education_stage: EducationStage = EducationStage.NONE
    boarding: bool = False
    phone: str | None = Field(None, pattern=r"^1\d{10}$")


class MemberPatch(_In):
    """A member's circumstances; the identity number (and what derives from it) never changes."""

    name: str | None = Field(None, min_length=1, max_length=60)
    relation: Relation | None = None
    hukou_type: HukouType | None = None
    labour_capacity: LabourCapacity | None = None
    employment: Employment | None = None
    union_member: bool | None = None
    labour_contract_months: int | None = Field(None, ge=0, le=600)
    health: HealthIn | None = None
    education_stage: EducationStage | None = None
    boarding: bool | None = None
    phone: str | None = Field(None, pattern=r"^1\d{10}$")


class LocationIn(_In):
    region: str = Field(
        pattern=r"^\d{6}$", description="GB/T 2260 county code", examples=["411302"]
    )
    address: str = Field(min_length=1, max_length=200)
    street_code: str | None = Field(None, description="9-digit street/township code")
    street_name: str | None = Field(None, max_length=100)
    community_code: str | None = Field(None, description="12-digit community/village code")
    community_name: str | None = Field(None, max_length=100)


class HouseholdIn(_In):
    """申请: the household, its members (one head), category and causes of hardship."""

    location: LocationIn
    hukou_type: HukouType = HukouType.URBAN
    category: Category
    flags: list[Flag] = []
    causes: list[Cause] = Field(min_length=1)
    channel: Channel = Channel.PLACE
    submitted_by: str | None = Field(
        None, max_length=100, description="employer department or sector (民政/残联/工会)"
    )
    members: list[MemberIn] = Field(min_length=1, max_length=30)


class HouseholdPatch(_In):
    """Fields that change by edit; status changes only by steps, amounts only by benefits."""

    location: LocationIn | None = None
    hukou_type: HukouType | None = None
    category: Category | None = None
    flags: list[Flag] | None = None
    causes: list[Cause] | None = Field(None, min_length=1)


class StepIn(_In):
    comment: str | None = Field(
        None, max_length=2000, description="the reason, required to reject, object or exit"
    )
    exit_kind: ExitKind | None = None


class PlanMeasureIn(_In):
    group: PlanGroup
    measure: str = Field(min_length=1, max_length=200)
    lead_department: str = Field(min_length=1, max_length=100)
    status: Literal["planned", "in_progress", "delivered", "stopped"] = "planned"


class PlanIn(_In):
    measures: list[PlanMeasureIn] = Field(max_length=50)


class HelperIn(_In):
    id: str = Field(min_length=1, max_length=64, description="the helper's id in the unit")
    name: str = Field(min_length=1, max_length=50)
    unit: str = Field(min_length=1, max_length=100)
    phone: str | None = Field(None, pattern=r"^1\d{10}$")
    reason: str | None = Field(None, max_length=500)


class VisitIn(_In):
    visited_on: date
    findings: str = Field(min_length=1, max_length=4000)
    follow_up_needed: bool = False


class IncomeIn(_In):
    month: str = Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", examples=["2026-10"])
    income_fen: int = Field(ge=0, description="the household's income that month, in fen")


class DeclarationItem(_In):
    member_id: str
    kind: Literal["income", "asset"]
    item: Literal[
        "wages",
        "pension",
        "unemployment_benefit",
        "business_income",
        "other_income",
        "deposits",
        "real_estate",
        "vehicle",
        "business_shares",
        "other_asset",
    ]
    month: str | None = Field(None, pattern=r"^\d{4}-(0[1-9]|1[0-2])$")
    amount_fen: int = Field(ge=0)
    note: str | None = Field(None, max_length=200)


class DeclarationIn(_In):
    items: list[DeclarationItem] = Field(min_length=1, max_length=200)


class HouseholdBatchGet(_In):
    """Many households read at once, each as `GET /v1/households/{id}` would answer it."""

    ids: list[Annotated[str, Field(pattern=ID_PATTERN)]] = Field(
        min_length=1,
        max_length=BATCH_READ_MAX,
        description=f"household ids, at most {BATCH_READ_MAX} (a repeated id is read once)",
    )
    include: list[Literal["declarations"]] = Field(
        [], description="`declarations`: each household's declared items, as its own endpoint"
    )


class HouseholdBatch(BaseModel):
    items: list[dict[str, Any]] = Field(
        description="the files found, in the order asked, each as the single read's answer"
    )
    not_found: list[str] = Field(
        description="the ids missing or outside the token's regions (the single read's 404)"
    )
    declarations: dict[str, list[dict[str, Any]]] | None = Field(
        None, description="by household id, when asked for with `include`"
    )


class TargetIn(_In):
    share_percent: int = Field(ge=0, le=100)


class Page(BaseModel):
    items: list[dict[str, Any]]
    next_cursor: str | None


class ListPage(Page):
    total: int | None = None  # with ?count=true: how many match, on every page
