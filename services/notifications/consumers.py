"""The notifications service's event handlers."""

from shared.events.consumer import Subscription

from services.notifications.settings import NotificationsSettings


def subscriptions(settings: NotificationsSettings) -> list[Subscription]:
    """The durable consumers the notifications service runs."""
    return []
