"""The benefits service's event handlers."""

from shared.events.consumer import Subscription

from services.benefits.settings import BenefitsSettings


def subscriptions(settings: BenefitsSettings) -> list[Subscription]:
    """The durable consumers the benefits service runs."""
    return []
