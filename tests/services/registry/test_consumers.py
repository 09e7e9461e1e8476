"""Which verification reports the registry takes in: those about a filed household only."""

from __future__ import annotations

from pathlib import Path

from services.registry.consumers import filed_households, subscriptions
from services.registry.settings import RegistrySettings
from shared.db import Database
from shared.events.envelope import CloudEvent, new_event


def _completed(household_id: str | None) -> CloudEvent:
    return new_event(
        service="verification",
        aggregate="verification",
        name="completed",
        subject="v-1",
        region="411302",
        sequence=1,
        data={"household_id": household_id, "report_version": 1},
    )


async def test_a_check_of_members_given_inline_is_not_taken_in(tmp_path: Path) -> None:
    inline, filed, other = _completed(None), _completed("h-1"), _completed("h-2")
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/registry.db")
    try:
        async with db.unit_of_work() as uow:
            assert await filed_households([inline, filed, other], uow) == {filed.id, other.id}
    finally:
        await db.dispose()


def test_the_verification_consumer_leaves_inline_checks_out(
    registry_settings: RegistrySettings,
) -> None:
    (verification,) = [
        s for s in subscriptions(registry_settings) if s.name == "registry-verification-completed"
    ]
    assert verification.wanted is filed_households
