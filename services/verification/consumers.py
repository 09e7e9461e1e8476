"""The verification service's event handlers."""

from shared.events.consumer import Subscription

from services.verification.settings import VerificationSettings


def subscriptions(settings: VerificationSettings) -> list[Subscription]:
    """The durable consumers the verification service runs."""
    return []
