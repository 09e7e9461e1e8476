"""Events the registry publishes, in the past tense (`cn.bangfu.registry.household.<name>.v1`)."""

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class HouseholdEvent:
    """Base of household events: `name` is the event's token in its type and subject."""

    name: ClassVar[str]
    household_id: str


@dataclass(frozen=True)
class HouseholdApplied(HouseholdEvent):
    """A household applied (申请); identity numbers appear masked only."""

    name: ClassVar[str] = "applied"
    region: str
    head_name_masked: str
    head_identity_masked: str
    applied_on: str
