"""The registry's event handlers (verification and benefits results arrive with their issues)."""

from services.registry.settings import RegistrySettings
from shared.events.consumer import Subscription


def subscriptions(settings: RegistrySettings) -> list[Subscription]:
    """The durable consumers the registry runs."""
    return []
