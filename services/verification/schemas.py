"""Request and response bodies of the verification API."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, ConfigDict, Field

from services.verification.domain.departments import Department


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConsentIn(_In):
    """核对授权书 of one person: who signed, when, for which departments, until when."""

    identity_number: str = Field(min_length=1, max_length=40)
    region: str = Field(pattern=r"^\d{6}$", description="the household's county code")
    household_id: str | None = None
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
    identity_number: str = Field(min_length=1, max_length=40)


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
