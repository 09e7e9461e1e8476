"""Request and response bodies of the verification API."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.verification.domain.departments import Department

# Ids in paths, queries and bodies: UUIDs and the like, never text PostgreSQL cannot store.
ID_PATTERN = r"^[0-9A-Za-z_.:-]{1,64}$"
Id = Annotated[str, Field(pattern=ID_PATTERN)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        """A NUL character is refused anywhere in a body (PostgreSQL text cannot hold it)."""
        if _has_nul(data):
            raise ValueError("text must not contain the NUL character")
        return data


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


class ConsentIn(_In):
    """核对授权书 of one person: who signed, when, for which departments, until when."""

    identity_number: str = Field(min_length=1, max_length=40)
    region: str = Field(pattern=r"^\d{6}$", description="the household's county code")
    household_id: Id | None = None
    signed_by: str = Field(min_length=1, max_length=50, description="the signatory's name")
    signed_on: date
    expires_on: date
    departments: list[Department] = Field(
        default_factory=lambda: list(Department),
        min_length=1,
        description="departments it covers (default: all)",
    )
    document_ref: str = Field(
        min_length=1, max_length=100, description="the paper or scanned form's reference number"
    )


class ConsentSearch(_In):
    """A person's consents by their number, or the consents recorded for a household."""

    identity_number: str | None = Field(None, min_length=1, max_length=40)
    household_id: Id | None = None

    @model_validator(mode="after")
    def _one_way_to_search(self) -> ConsentSearch:
        if (self.identity_number is None) == (self.household_id is None):
            raise ValueError("give either identity_number or household_id, not both or neither")
        return self


class RevokeIn(_In):
    reason: str = Field(min_length=1, max_length=500)
    revoked_on: date | None = None


class ConsentOut(BaseModel):
    id: str
    identity_number: str = Field(description="always masked")
    region: str
    household_id: str | None
    signed_by: str
    signed_on: date
    expires_on: date
    departments: list[Department]
    document_ref: str
    revoked_on: date | None
    revoked_reason: str | None
    state: str = Field(description="valid, not_yet_valid, expired or revoked, as of today")


class MemberIn(_In):
    """A member given inline (a household not filed in the registry, e.g. a pre-check)."""

    member_id: Id
    identity_number: str = Field(min_length=1, max_length=40)


class DeclaredIn(_In):
    member_id: Id
    kind: Literal["income", "asset"]
    item: str = Field(min_length=1, max_length=30)
    amount_fen: int = Field(ge=0)


class VerificationIn(_In):
    """A household by its registry id, or its members inline with their region."""

    household_id: Id | None = None
    members: list[MemberIn] | None = Field(default=None, min_length=1, max_length=30)
    region: str | None = Field(
        default=None, pattern=r"^\d{6}$", description="required with inline members"
    )
    declared: list[DeclaredIn] = Field(default_factory=list, max_length=300)
    purpose: str = Field(min_length=1, max_length=200, description="why the check is made")
    departments: list[Department] = Field(
        default_factory=lambda: list(Department), min_length=1, description="default: all"
    )

    @model_validator(mode="after")
    def _one_way_to_name_the_household(self) -> VerificationIn:
        if (self.household_id is None) == (self.members is None):
            raise ValueError("give either household_id or members, not both or neither")
        if self.members is not None and self.region is None:
            raise ValueError("region is required with inline members")
        if self.household_id is not None and self.declared:
            raise ValueError("declared comes from the registry for a filed household")
        return self


# Households named in one batch: the batch is queued in one transaction.
MAX_BATCH = 10_000


class BatchIn(_In):
    """批量核对: these households, or every household of a region (by registry status)."""

    region: str = Field(pattern=r"^\d{6}$", description="the county the batch is filed under")
    household_ids: list[Id] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_BATCH,
        description=f"at most {MAX_BATCH:,}; one filed outside `region` is reported not found",
    )
    status: str | None = Field(
        default="enrolled", description="without household_ids: the registry status to take"
    )
    purpose: str = Field(min_length=1, max_length=200)
    departments: list[Department] = Field(default_factory=lambda: list(Department), min_length=1)


class PersonQueriesIn(_In):
    identity_number: str = Field(min_length=1, max_length=40)
