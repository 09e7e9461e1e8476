"""The notifications service's event handlers."""

from services.notifications.settings import NotificationsSettings
from shared.events.consumer import Subscription


def subscriptions(settings: NotificationsSettings) -> list[Subscription]:
    """The durable consumers the notifications service runs."""
    return []
