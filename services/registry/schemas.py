"""Request and response bodies of the registry API."""

from pydantic import BaseModel, Field


class PersonIn(BaseModel):
    name: str = Field(min_length=1, max_length=60, examples=["张三明"])
    identity_number: str = Field(
        min_length=15,
        max_length=40,
        description="GB 11643 resident identity number",
        examples=["11010519491231002X"],
    )


class HouseholdIn(BaseModel):
    """Minimal intake (申请): the region and the head of household."""

    region: str = Field(
        pattern=r"^\d{6}$", description="GB/T 2260 county code", examples=["411302"]
    )
    head: PersonIn


class PersonOut(BaseModel):
    name: str
    identity_number: str = Field(description="masked unless the caller has pii:read")


class HouseholdOut(BaseModel):
    id: str
    region: str
    status: str
    version: int
    head: PersonOut
