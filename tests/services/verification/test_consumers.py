"""Which household events the verification service takes in: the changes that call for a
check, not those no department would answer differently about."""

from __future__ import annotations

from pathlib import Path

from services.verification.consumers import material_changes, subscriptions
from services.verification.settings import VerificationSettings
from shared.db import Database
from tests.helpers import household_event


async def test_only_material_changes_are_taken_in(tmp_path: Path) -> None:
    declared = household_event("changed", ["declarations", "location"])
    moved = household_event("changed", ["location"])
    attached = household_event("changed", ["verification"])
    joined = household_event("member_added")
    left = household_event("member_removed")
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/verification.db")
    try:
        async with db.unit_of_work() as uow:
            kept = await material_changes([declared, moved, attached, joined, left], uow)
    finally:
        await db.dispose()
    assert kept == {declared.id, joined.id, left.id}


def test_the_change_consumer_leaves_the_others_out(
    verification_settings: VerificationSettings,
) -> None:
    (changed,) = [
        s
        for s in subscriptions(verification_settings)
        if s.name == "verification-household-changed"
    ]
    assert changed.wanted is material_changes
