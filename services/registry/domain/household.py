"""The household file (一户一档) — for now its intake; the full workflow follows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum

from services.registry.domain.events import HouseholdApplied, HouseholdEvent
from shared.identity import IdentityNumber, mask_identity_number


class HouseholdStatus(StrEnum):
    APPLIED = "applied"


class InvalidName(ValueError):
    """A person's name that cannot be filed."""


def clean_name(raw: str) -> str:
    """Trim surrounding spaces; refuse an empty name or one over 50 characters."""
    name = raw.strip()
    if not name:
        raise InvalidName("name is empty")
    if len(name) > 50:
        raise InvalidName("name is longer than 50 characters")
    return name


def mask_name(name: str) -> str:
    """`张三明` -> `张*明`, `张三` -> `张*`: keeps the family name and the last character."""
    if len(name) <= 1:
        return "*"
    if len(name) == 2:
        return name[0] + "*"
    return name[0] + "*" * (len(name) - 2) + name[-1]


@dataclass
class Household:
    """A household's file: where it lives, who heads it, where it stands in review."""

    id: str
    region: str
    head_name: str
    head_identity: IdentityNumber
    status: HouseholdStatus
    version: int
    events: list[HouseholdEvent] = field(default_factory=list)

    @classmethod
    def apply(
        cls,
        *,
        household_id: str,
        region: str,
        head_name: str,
        head_identity: IdentityNumber,
        today: date,
    ) -> Household:
        """Open a file at the applied step and record HouseholdApplied."""
        household = cls(
            id=household_id,
            region=region,
            head_name=clean_name(head_name),
            head_identity=head_identity,
            status=HouseholdStatus.APPLIED,
            version=1,
        )
        household.events.append(
            HouseholdApplied(
                household_id=household_id,
                region=region,
                head_name_masked=mask_name(household.head_name),
                head_identity_masked=mask_identity_number(head_identity.number),
                applied_on=today.isoformat(),
            )
        )
        return household
