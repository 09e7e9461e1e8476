"""The DCI envelope `{signature, header, message}` and its messages, as the social registry
spec (social_api_v1.0.0.yaml) defines them, with the acknowledgement and error answers."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.events.envelope import new_event_id

TransactionId = Annotated[str, Field(min_length=1, max_length=99)]
ReferenceId = Annotated[str, Field(min_length=1, max_length=99)]


class ErrorCode(StrEnum):
    """The spec's `Error.code` values this registry answers."""

    BAD_REQUEST = "err.request.bad"
    UNAUTHORIZED = "err.request.unauthorized"
    FORBIDDEN = "err.request.forbidden"
    VERSION = "err.version.not_supported"
    SENDER_URI = "err.sender_uri.invalid"
    SIGNATURE_MISSING = "err.signature.missing"
    SIGNATURE_INVALID = "err.signature.invalid"
    ENCRYPTION = "err.encryption.invalid"


class DciError(Exception):
    """A request refused with `ack_status: ERR` and one of the spec's codes."""

    def __init__(self, code: ErrorCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message[:999]


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class Header(_Model):
    """MsgHeader_V1.0.0: what a request's header must hold."""

    version: str = "1.0.0"
    message_id: str = Field(min_length=1, max_length=200)
    message_ts: datetime
    action: str
    sender_id: str = Field(min_length=1, max_length=200)
    sender_uri: str | None = Field(None, max_length=2000)
    receiver_id: str | None = None
    total_count: int = Field(ge=0)
    is_msg_encrypted: bool = False


class Envelope(BaseModel):
    signature: str | None = None
    header: dict[str, Any]
    message: dict[str, Any]


class Sort(_Model):
    attribute_name: str
    sort_order: Literal["asc", "desc"] = "asc"


class Pagination(_Model):
    page_size: int = Field(ge=1, le=1000)
    page_number: int = Field(1, ge=1)


class SearchCriteria(_Model):
    query_type: Literal["idtype-value", "expression", "predicate"]
    query: Any
    response_entity: Literal["Group", "Member"] = "Group"
    reg_record_type: str | None = None
    sort: list[Sort] = []
    pagination: Pagination | None = None
    consent: dict[str, Any] | None = None
    authorize: dict[str, Any] | None = None


class SearchItem(_Model):
    reference_id: ReferenceId
    timestamp: datetime
    search_criteria: SearchCriteria
    locale: str | None = Field(None, pattern=r"^[a-z]{3}$")


class SearchRequest(_Model):
    transaction_id: TransactionId
    search_request: list[SearchItem] = Field(min_length=1, max_length=100)


class SubscribeCriteria(_Model):
    reg_event_type: str
    filter_type: Literal["idtype-value", "expression", "predicate", "graphql"] | None = None
    filter: Any
    notify_record_type: str


class SubscribeItem(_Model):
    reference_id: ReferenceId
    timestamp: datetime
    subscribe_criteria: SubscribeCriteria
    locale: str | None = Field(None, pattern=r"^[a-z]{3}$")


class SubscribeRequest(_Model):
    transaction_id: TransactionId
    subscribe_request: list[SubscribeItem] = Field(min_length=1, max_length=100)


class UnsubscribeRequest(_Model):
    transaction_id: TransactionId
    timestamp: datetime
    subscription_codes: list[Annotated[str, Field(max_length=99)]] = Field(
        min_length=1, max_length=100
    )


class TxnStatusCriteria(_Model):
    reference_id: ReferenceId
    txn_type: Literal["search", "subscribe", "receipt"]
    attribute_type: Literal["transaction_id", "reference_id_list", "correlation_id"]
    attribute_value: str | list[str]


class TxnStatusRequest(_Model):
    transaction_id: TransactionId
    txnstatus_request: TxnStatusCriteria


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def new_correlation_id() -> str:
    return new_event_id()


def ack(correlation_id: str) -> dict[str, Any]:
    return {
        "message": {"ack_status": "ACK", "timestamp": now_iso(), "correlation_id": correlation_id}
    }


def error_answer(error: DciError) -> dict[str, Any]:
    return {
        "message": {
            "ack_status": "ERR",
            "timestamp": now_iso(),
            "correlation_id": new_correlation_id(),
            "error": {"code": error.code.value, "message": error.message},
        }
    }


def callback_header(
    action: str, *, sender_id: str, receiver_id: str, status: str, total: int, completed: int
) -> dict[str, Any]:
    """MsgCallbackHeader_V1.0.0 for an on-* answer or a notify."""
    return {
        "version": "1.0.0",
        "message_id": new_event_id(),
        "message_ts": now_iso(),
        "action": action,
        "status": status,
        "total_count": total,
        "completed_count": completed,
        "sender_id": sender_id,
        "receiver_id": receiver_id,
        "is_msg_encrypted": False,
    }
