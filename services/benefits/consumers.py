"""The benefits service's event handlers."""

from services.benefits.settings import BenefitsSettings
from shared.events.consumer import Subscription


def subscriptions(settings: BenefitsSettings) -> list[Subscription]:
    """The durable consumers the benefits service runs."""
    return []
