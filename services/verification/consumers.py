"""The verification service's event handlers: household events start checks, feeds re-check.

A handler only queues a verification (the worker asks the departments); the event id is the
verification's `cause`, so a redelivered event finds its verification and starts nothing.
"""

from __future__ import annotations

from services.verification import store
from services.verification.domain.departments import Department
from services.verification.service import request
from services.verification.settings import VerificationSettings
from shared.db import UnitOfWork
from shared.events.consumer import Subscription
from shared.events.envelope import CloudEvent

SERVICE_ACTOR = "service:verification"
# Changes that alter what departments would say about the household (§4, 精准识别).
MATERIAL_FIELDS = frozenset({"declarations"})


async def _queue(event: CloudEvent, uow: UnitOfWork, *, trigger: str, purpose: str) -> None:
    household_id = str(event.data["household_id"])
    await store.watch_household(uow.session, household_id, region=event.region)
    await request(
        uow,
        household_id=household_id,
        region=event.region,
        purpose=purpose,
        departments=list(Department),
        trigger=trigger,
        requested_by=SERVICE_ACTOR,
        cause=event.id,
    )


async def on_household_applied(event: CloudEvent, uow: UnitOfWork) -> None:
    """申请: verify every member with every department (精准识别)."""
    await _queue(event, uow, trigger="applied", purpose="申请审核 (application review)")


def _material(event: CloudEvent) -> bool:
    """A member added or removed, or a change of a field departments would answer about."""
    name = event.type.split(".")[-2]
    return name != "changed" or bool(MATERIAL_FIELDS & set(event.data.get("fields", [])))


async def material_changes(events: list[CloudEvent], uow: UnitOfWork) -> set[str]:
    """The household changes that call for a check (`Subscription.wanted`): the others (an
    address edited, another service's result attached: one for each verification completed)
    are acknowledged with no inbox row and no transaction."""
    return {event.id for event in events if _material(event)}


async def on_household_changed(event: CloudEvent, uow: UnitOfWork) -> None:
    """A member added or removed, or declared income or assets changed: verify again."""
    if not _material(event):
        return
    await _queue(event, uow, trigger="changed", purpose="家庭情况变化复核 (change review)")


async def on_household_enrolled(event: CloudEvent, uow: UnitOfWork) -> None:
    """Enrolled households are re-checked yearly and when a department reports a change."""
    await store.watch_household(
        uow.session, str(event.data["household_id"]), region=event.region, enrolled=True
    )


async def on_household_exited(event: CloudEvent, uow: UnitOfWork) -> None:
    await store.watch_household(
        uow.session, str(event.data["household_id"]), region=event.region, enrolled=False
    )


async def on_department_change(event: CloudEvent, uow: UnitOfWork) -> None:
    """A death, a marriage, a property or vehicle registered: re-check the enrolled households
    the person belongs to now, not at the yearly recheck."""
    department = event.type.split(".")[3]  # cn.bangfu.dept.<code>.changed.v1
    for household in await store.enrolled_households_of(uow.session, event.data["person_index"]):
        await request(
            uow,
            household_id=household["household_id"],
            region=household["region"],
            purpose=f"部门变更复核 ({department}: {event.data.get('kind')})",
            departments=list(Department),
            trigger="department_change",
            requested_by=SERVICE_ACTOR,
            cause=f"{event.id}:{household['household_id']}",
        )


DEPARTMENT_FEED_STREAM = "DEPT_CHANGES"
DEPARTMENT_FEED_SUBJECTS = ["bangfu.dept.*.changed.>"]


def subscriptions(settings: VerificationSettings) -> list[Subscription]:
    """The durable consumers on the registry's stream (the feed consumer runs in app.py)."""
    household = "bangfu.registry.household"
    return [
        Subscription(
            "verification-household-applied",
            "REGISTRY",
            [f"{household}.applied.>"],
            on_household_applied,
        ),
        Subscription(
            "verification-household-changed",
            "REGISTRY",
            [
                f"{household}.changed.>",
                f"{household}.member_added.>",
                f"{household}.member_removed.>",
            ],
            on_household_changed,
            wanted=material_changes,
        ),
        Subscription(
            "verification-household-enrolled",
            "REGISTRY",
            [f"{household}.enrolled.>"],
            on_household_enrolled,
        ),
        Subscription(
            "verification-household-exited",
            "REGISTRY",
            [f"{household}.exited.>"],
            on_household_exited,
        ),
    ]


def department_feed(settings: VerificationSettings) -> Subscription:
    """Department change feeds, captured by a stream this service provisions."""
    return Subscription(
        "verification-department-changes",
        DEPARTMENT_FEED_STREAM,
        DEPARTMENT_FEED_SUBJECTS,
        on_department_change,
    )
