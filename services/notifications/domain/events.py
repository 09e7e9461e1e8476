"""Events the notifications service publishes: `cn.bangfu.notifications.notification.<name>.v1`.

They carry ids and codes, never a phone number or an identity number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class NotificationEvent:
    """What happened to one message."""

    aggregate: ClassVar[str] = "notification"
    name: ClassVar[str]
    message_id: str
    household_id: str
    channel: str  # inbox | sms | email | webhook
    template: str
    recipient_kind: str  # helper | household | county_office | department
    # The helper's id, the county code or `<department>:<county>`; none for a household.
    recipient: str | None
    # What caused it: the event id, or `<schedule>:<household>:<period>`.
    cause: str


@dataclass(frozen=True)
class NotificationSent(NotificationEvent):
    """The message left: stored in the inbox, accepted by the SMS gateway or SMTP, or queued
    as webhook deliveries to the department's systems."""

    name: ClassVar[str] = "sent"


@dataclass(frozen=True)
class NotificationFailed(NotificationEvent):
    """The message could not be sent, and will not be: `reason` says why."""

    name: ClassVar[str] = "failed"
    reason: str


@dataclass(frozen=True)
class NotificationReferral:
    """转介: a department is asked to deliver measures to a household. Delivered only by webhook
    to that department's subscriptions (it is not published on NATS)."""

    aggregate: ClassVar[str] = "notification"
    name: ClassVar[str] = "referral"
    message_id: str
    household_id: str
    department: str
    department_name: str
    # Each with `code`, `name`, `amount_fen` (integer 分) and `amount_yuan` (for people).
    measures: tuple[dict[str, Any], ...]
    text: str
    cause: str


NOTIFICATION_EVENTS: tuple[type[Any], ...] = (
    NotificationSent,
    NotificationFailed,
    NotificationReferral,
)
