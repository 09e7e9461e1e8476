"""The CloudEvents 1.0 envelope (structured JSON) and the NATS subject of each event."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Literal

import uuid6
from pydantic import BaseModel, ConfigDict, Field

from shared.observability import current_traceparent

SCHEMA_BASE = "https://bangfu.org/schemas/events"
CONTENT_TYPE = "application/cloudevents+json"
_TOKEN = re.compile(r"^[a-z][a-z0-9_]*$")


class CloudEvent(BaseModel):
    """One event as integrators receive it; `region` and `sequence` are extensions."""

    model_config = ConfigDict(frozen=True, extra="allow")

    specversion: Literal["1.0"] = "1.0"
    id: str
    source: str
    type: str
    subject: str
    time: datetime
    datacontenttype: Literal["application/json"] = "application/json"
    dataschema: str
    region: str = Field(pattern=r"^\d{6}$")
    # The aggregate's version after this event: lets a consumer spot a gap or a stale event.
    sequence: int = Field(ge=0)
    traceparent: str | None = None
    data: dict[str, Any]

    @property
    def nats_subject(self) -> str:
        """`bangfu.<service>.<aggregate>.<event>.<pp>.<cc>.<dd>` (the version stays in `type`)."""
        _, _, service, *aggregate_and_name, _version = self.type.split(".")
        return nats_subject(service, ".".join(aggregate_and_name), self.region)

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    @classmethod
    def from_json(cls, body: bytes | str) -> CloudEvent:
        return cls.model_validate_json(body)


def new_event_id() -> str:
    """A UUIDv7: time-ordered, so ids sort roughly by creation."""
    return str(uuid6.uuid7())


def event_type(service: str, aggregate: str, name: str, version: int = 1) -> str:
    """`cn.bangfu.registry.household.enrolled.v1`; `aggregate` may be dotted (`batch.progress`)."""
    for token in [service, *aggregate.split("."), name]:
        if not _TOKEN.match(token):
            raise ValueError(f"event token {token!r} must be lower-case letters, digits or _")
    return f"cn.bangfu.{service}.{aggregate}.{name}.v{version}"


def nats_subject(service: str, aggregate_and_name: str, region: str) -> str:
    """The subject with the region split into 2-digit tokens: `...enrolled.41.13.02`."""
    if not re.fullmatch(r"\d{6}", region):
        raise ValueError(f"region {region!r} must be a 6-digit GB/T 2260 code")
    return f"bangfu.{service}.{aggregate_and_name}.{region[:2]}.{region[2:4]}.{region[4:]}"


def region_filter(prefix: str) -> str:
    """The trailing subject tokens that select one region prefix (`4113` -> `41.13.*`)."""
    tokens = [prefix[i : i + 2] for i in range(0, len(prefix), 2)]
    if len(prefix) not in (2, 4, 6) or not prefix.isdigit():
        raise ValueError(f"region prefix {prefix!r} must be 2, 4 or 6 digits")
    return ".".join(tokens + ["*"] * (3 - len(tokens)))


def new_event(
    *,
    service: str,
    aggregate: str,
    name: str,
    subject: str,
    region: str,
    sequence: int,
    data: dict[str, Any],
    version: int = 1,
    traceparent: str | None = None,
    time: datetime | None = None,
) -> CloudEvent:
    """Build the envelope of one domain event."""
    type_ = event_type(service, aggregate, name, version)
    return CloudEvent(
        id=new_event_id(),
        source=f"/bangfu/{service}",
        type=type_,
        subject=subject,
        time=time or datetime.now(UTC),
        dataschema=f"{SCHEMA_BASE}/{type_}.json",
        region=region,
        sequence=sequence,
        traceparent=traceparent or current_traceparent(),
        data=data,
    )
