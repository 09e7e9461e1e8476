"""Household members: who they are, as the policies' rules need to know them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum

from shared.identity import IdentityNumber


class Relation(StrEnum):
    HEAD = "head"  # 户主
    SPOUSE = "spouse"
    CHILD = "child"
    PARENT = "parent"
    GRANDPARENT = "grandparent"
    GRANDCHILD = "grandchild"
    SIBLING = "sibling"
    OTHER = "other"


class HukouType(StrEnum):
    """城镇 (urban) or 农村 (rural) household registration."""

    URBAN = "urban"
    RURAL = "rural"


class LabourCapacity(StrEnum):
    FULL = "full"
    PARTIAL = "partial"
    NONE = "none"


class Employment(StrEnum):
    EMPLOYED = "employed"
    FLEXIBLE = "flexible"  # 灵活就业
    UNEMPLOYED = "unemployed"
    LAID_OFF = "laid_off"  # 下岗
    RETIRED = "retired"
    STUDENT = "student"
    NOT_WORKING_AGE = "not_working_age"


class EducationStage(StrEnum):
    NONE = "none"
    PRESCHOOL = "preschool"
    PRIMARY = "primary"
    JUNIOR_HIGH = "junior_high"
    SENIOR_HIGH = "senior_high"
    SECONDARY_VOCATIONAL = "secondary_vocational"
    COLLEGE = "college"


class InvalidText(ValueError):
    """A text field that cannot be filed (empty, or too long)."""

    def __init__(self, field_name: str, reason: str):
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.reason = reason


def clean_text(raw: str, *, field_name: str, max_length: int) -> str:
    """Trim surrounding spaces (ideographic ones too); refuse empty or over-long text."""
    text = raw.strip(" \t\r\n\u3000")
    if not text:
        raise InvalidText(field_name, "must not be empty")
    if len(text) > max_length:
        raise InvalidText(field_name, f"is longer than {max_length} characters")
    return text


def mask_name(name: str) -> str:
    """`张三明` -> `张*明`, `张三` -> `张*`: keeps the family name and the last character."""
    if len(name) <= 1:
        return "*"
    if len(name) == 2:
        return name[0] + "*"
    return name[0] + "*" * (len(name) - 2) + name[-1]


@dataclass(frozen=True)
class Health:
    major_illness: bool = False  # 重大疾病
    chronic_illness: bool = False  # 慢性病
    disability_grade: int | None = None  # 1 (most severe) to 4


@dataclass
class Member:
    """One person in the household; birth date, sex and age come from the identity number."""

    id: str
    name: str
    identity: IdentityNumber
    relation: Relation
    hukou_type: HukouType
    labour_capacity: LabourCapacity
    employment: Employment
    union_member: bool = False
    labour_contract_months: int | None = None
    health: Health = field(default_factory=Health)
    education_stage: EducationStage = EducationStage.NONE
    boarding: bool = False
    phone: str | None = None

    def age_on(self, day: date) -> int:
        return self.identity.age_on(day)
