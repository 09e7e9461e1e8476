"""The registry's event handlers (verification and benefits results arrive with their issues)."""

from shared.events.consumer import Subscription

from services.registry.settings import RegistrySettings


def subscriptions(settings: RegistrySettings) -> list[Subscription]:
    """The durable consumers the registry runs."""
    return []
