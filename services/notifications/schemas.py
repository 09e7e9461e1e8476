"""Request and response bodies of the notifications API."""

from __future__ import annotations

from datetime import datetime

from pydantic import AnyHttpUrl, BaseModel, Field


class SubscriptionIn(BaseModel):
    url: AnyHttpUrl = Field(
        description="where deliveries are POSTed: http(s), no credentials, port 80, 443 or "
        "≥ 1024, not a private, loopback, link-local, multicast or reserved address unless the "
        "operator allows its network"
    )
    secret: str = Field(
        min_length=16, max_length=200, description="the HMAC-SHA256 key; never shown again"
    )
    event_types: list[str] = Field(
        min_length=1,
        description="CloudEvent types; `*` matches anything (`cn.bangfu.registry.household.*`)",
    )
    regions: list[str] | None = Field(
        None,
        description="region prefixes (2, 4 or 6 digits) inside the token's; omitted means all "
        "of the token's regions; an empty list is refused (it would deliver nothing)",
    )
    department: str | None = Field(
        None,
        max_length=32,
        pattern=r"^[a-z_]+$",
        description="the department this system belongs to (`renshe`): referrals come here",
    )


class SubscriptionOut(BaseModel):
    id: str
    url: str
    event_types: list[str]
    regions: list[str]
    department: str | None
    status: str
    created_at: datetime
    updated_at: datetime


class DeliveryOut(BaseModel):
    id: str
    position: int
    event_id: str
    event_type: str
    event_time: datetime
    household_id: str
    status: str = Field(description="pending | delivered | dead | cancelled")
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    replay_of: str | None = Field(
        description="set on a replay: the delivery it repeats, or the event id when the event "
        "came from the stream (the subscription never had it)"
    )
    created_at: datetime
    finished_at: datetime | None


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_after: int | None = Field(description="pass as `after` for the next page")


class AttemptOut(BaseModel):
    attempt: int
    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int


class ReplayIn(BaseModel):
    since: datetime
    until: datetime


class ReplayOut(BaseModel):
    queued: int


class MessageOut(BaseModel):
    id: str
    recipient: str
    channel: str
    template: str
    cause: str
    household_id: str
    region: str
    subject: str | None
    body: str
    status: str = Field(description="queued | sent | delivered | failed")
    reason: str | None
    created_at: datetime
    send_after: datetime | None = Field(
        description="a queued message's planned send time (quiet hours, rate limit, retry)"
    )
    sent_at: datetime | None
    delivered_at: datetime | None
    read_at: datetime | None


class InboxOut(BaseModel):
    unread: int
    items: list[MessageOut]
