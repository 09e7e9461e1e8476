"""Department change feeds: a death, a marriage, a property or a vehicle registered.

A change goes out on `bangfu.dept.<code>.changed.<pp>.<cc>.<dd>` as a CloudEvent that names the
person by a keyed index (HMAC-SHA256) and the masked number, never the number itself.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from pydantic import BaseModel, ConfigDict, Field

from sandbox.departments import DEPARTMENTS
from sandbox.people import ChangeKind
from sandbox.protocol import Rejected
from shared.events.envelope import SCHEMA_BASE, CloudEvent, event_type, new_event_id
from shared.identity import (
    IdentityNumber,
    InvalidIdentityNumber,
    feed_index,
    mask_identity_number,
)
from shared.identity import parse_identity_number as _parse
from shared.observability import current_traceparent
from shared.regions import InvalidRegion, parse_region


class ChangeRequest(BaseModel):
    """`POST /admin/changes`: what a department publishes about one person."""

    model_config = ConfigDict(extra="forbid")

    department: str
    identity_number: str
    region: str = Field(description="The 6-digit GB/T 2260 region the change is filed under.")
    kind: ChangeKind
    effective_date: date | None = None


def check_change(request: ChangeRequest, *, today: date) -> IdentityNumber:
    """The person the change is about, or Rejected naming what is wrong."""
    department = DEPARTMENTS.get(request.department)
    if department is None:
        raise Rejected(422, "invalid-input", f"department: {request.department!r} is unknown")
    if request.kind not in department.change_kinds:
        allowed = ", ".join(department.change_kinds) or "nothing"
        raise Rejected(
            422,
            "invalid-input",
            f"kind: {department.code} does not publish {request.kind!r}; it publishes {allowed}",
        )
    try:
        parse_region(request.region)
    except InvalidRegion as exc:
        raise Rejected(422, "invalid-input", f"region: {exc}") from None
    try:
        return _parse(request.identity_number, today=today)
    except InvalidIdentityNumber as exc:
        raise Rejected(422, "invalid-identity-number", f"identity_number: {exc}") from None


def change_event(
    request: ChangeRequest,
    identity: IdentityNumber,
    *,
    key: bytes,
    sequence: int,
    effective_date: date,
) -> CloudEvent:
    """`cn.bangfu.dept.<code>.changed.v1`, subject the person index, region an extension."""
    index = feed_index(identity.number, key=key)
    type_ = event_type("dept", request.department, "changed")
    return CloudEvent(
        id=new_event_id(),
        source=f"/bangfu/dept/{request.department}",
        type=type_,
        subject=index,
        time=datetime.now(UTC),
        dataschema=f"{SCHEMA_BASE}/{type_}.json",
        region=request.region,
        sequence=sequence,
        traceparent=current_traceparent(),
        data={
            "kind": request.kind,
            "person_index": index,
            "identity_number_masked": mask_identity_number(identity.number),
            "region": request.region,
            "effective_date": effective_date.isoformat(),
        },
    )
