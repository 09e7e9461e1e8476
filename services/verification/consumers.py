"""The verification service's event handlers."""

from services.verification.settings import VerificationSettings
from shared.events.consumer import Subscription


def subscriptions(settings: VerificationSettings) -> list[Subscription]:
    """The durable consumers the verification service runs."""
    return []
