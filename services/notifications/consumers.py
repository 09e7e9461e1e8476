"""The notifications service's event handlers: rules into messages, events out to webhooks."""

from __future__ import annotations

from datetime import UTC, datetime

from services.notifications import follow_up, service, webhooks
from services.notifications.settings import NotificationsSettings
from shared.db import UnitOfWork
from shared.events.consumer import Handler, Subscription
from shared.events.envelope import CloudEvent

# Every producing service's stream: department systems may subscribe to any event.
STREAMS = ("registry", "verification", "benefits", "notifications")


async def on_any_event(event: CloudEvent, uow: UnitOfWork) -> None:
    """Queue the event for each webhook subscription whose filter wants it."""
    await webhooks.fan_out(uow, event, now=datetime.now(UTC))


def on_rule_event(engine: service.Engine) -> Handler:
    """Household milestones, verification results and entitlements, through the rules."""

    async def handle(event: CloudEvent, uow: UnitOfWork) -> None:
        await follow_up.on_event(uow, engine, event)

    return handle


def subscriptions(settings: NotificationsSettings) -> list[Subscription]:
    """The durable consumers the notifications service runs."""
    engine = service.Engine.from_settings(settings)
    rules = on_rule_event(engine)
    return [
        Subscription(
            "notifications-rules-registry",
            "REGISTRY",
            ["bangfu.registry.household.>"],
            rules,
        ),
        Subscription(
            "notifications-rules-verification",
            "VERIFICATION",
            ["bangfu.verification.verification.completed.>"],
            rules,
        ),
        Subscription(
            "notifications-rules-benefits",
            "BENEFITS",
            [
                "bangfu.benefits.entitlements.determined.>",
                "bangfu.benefits.entitlements.changed.>",
                "bangfu.benefits.exit.eligible.>",
            ],
            rules,
        ),
        *(
            Subscription(
                f"notifications-webhooks-{stream}",
                stream.upper(),
                [f"bangfu.{stream}.>"],
                on_any_event,
            )
            for stream in STREAMS
        ),
    ]
