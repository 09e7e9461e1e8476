"""The registry's event handlers: results of verification and benefits attach to the file."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from services.registry import service
from services.registry.dci import notify
from services.registry.settings import RegistrySettings
from shared.db import UnitOfWork
from shared.events.consumer import Handler, Subscription
from shared.events.envelope import CloudEvent
from shared.observability import current_traceparent


class Attachments:
    """A result consumer's batch scope (`Subscription.batch`): the results of a fetched batch's
    events attached to their files together at its end (`service.attach`: three statements a
    batch, where each event's attachment and history row were two). An event handled on its
    own, outside a batch, attaches its result at once."""

    def __init__(self) -> None:
        self._pending: list[service.Attachment] | None = None

    @contextlib.asynccontextmanager
    async def scope(
        self, _events: list[CloudEvent], uow: UnitOfWork, _ahead: object
    ) -> AsyncIterator[None]:
        self._pending = []
        try:
            yield
            await service.attach(uow, self._pending)
        finally:
            self._pending = None

    async def attach(
        self, uow: UnitOfWork, event: CloudEvent, field_name: str, value: dict[str, Any]
    ) -> None:
        """Attach `value` to the file of the household the event names, in its trace."""
        attachment = service.Attachment(
            household_id=str(event.data["household_id"]),
            field_name=field_name,
            value=value,
            source=event.source,
            traceparent=current_traceparent(),
        )
        if self._pending is None:
            await service.attach(uow, [attachment])
        else:
            self._pending.append(attachment)


def verification_handler(attachments: Attachments) -> Handler:
    async def on_verification_completed(event: CloudEvent, uow: UnitOfWork) -> None:
        """核对报告 summary: per-capita income, asset verdicts, discrepancies flagged for review."""
        data = event.data
        if data.get("household_id") is None:
            return  # a check of members given inline, for a household not (yet) filed
        summary: dict[str, Any] = {
            "verification_id": event.subject,
            "completed_at": event.time.isoformat(),
            "report_version": data.get("report_version"),
            "per_capita_income_fen": data.get("per_capita_income_fen"),
            "asset_verdicts": data.get("asset_verdicts", {}),
            "discrepancies": data.get("discrepancies", []),
            "unavailable_departments": data.get("unavailable_departments", []),
            "needs_review": bool(data.get("discrepancies") or data.get("unavailable_departments")),
        }
        await attachments.attach(uow, event, "verification", summary)

    return on_verification_completed


async def filed_households(events: list[CloudEvent], uow: UnitOfWork) -> set[str]:
    """The reports about filed households (`Subscription.wanted`): a check of members given
    inline has no file to attach to, and is acknowledged with no inbox row and no transaction
    (the registry's CPU for a single inline check, bench/verification.py: 3.3 ms)."""
    return {event.id for event in events if event.data.get("household_id") is not None}


def entitlements_handler(attachments: Attachments) -> Handler:
    async def on_entitlements_determined(event: CloudEvent, uow: UnitOfWork) -> None:
        """帮扶措施明白卡: the measures and amounts benefits determined, shown on the file."""
        card = {"determined_at": event.time.isoformat(), **event.data}
        await attachments.attach(uow, event, "entitlements", card)

    return on_entitlements_determined


def exit_handler(attachments: Attachments) -> Handler:
    async def on_exit_eligible(event: CloudEvent, uow: UnitOfWork) -> None:
        """脱困 met by income: flag the file for the county office to decide the exit."""
        flag = {"flagged_at": event.time.isoformat(), **event.data}
        await attachments.attach(uow, event, "exit_eligibility", flag)

    return on_exit_eligible


def subscriptions(settings: RegistrySettings) -> list[Subscription]:
    """The durable consumers the registry runs."""
    # A scope each: a consumer's batches are handled one at a time, the consumers side by side.
    verification, entitlements, exits = Attachments(), Attachments(), Attachments()
    return [
        Subscription(
            "registry-verification-completed",
            "VERIFICATION",
            ["bangfu.verification.verification.completed.>"],
            verification_handler(verification),
            batch=verification.scope,
            wanted=filed_households,
        ),
        Subscription(
            "registry-entitlements-determined",
            "BENEFITS",
            ["bangfu.benefits.entitlements.determined.>", "bangfu.benefits.entitlements.changed.>"],
            entitlements_handler(entitlements),
            batch=entitlements.scope,
        ),
        Subscription(
            "registry-exit-eligible",
            "BENEFITS",
            ["bangfu.benefits.exit.eligible.>"],
            exit_handler(exits),
            batch=exits.scope,
        ),
        notify.subscription(settings),  # household events as DCI /registry/notify calls
    ]
