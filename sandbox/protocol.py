"""What a department query is on both transports: its headers, body, request hash and errors.

Every query carries the consent (授权书) id and the purpose in headers, as X-Road's
X-Road-Issue does; the answer echoes a hash that binds it to the query it answers.

A department also answers for several people in one request (a household's members, 家庭成员
合并查询): the purpose in its header, each person's consent id in the body beside the number,
each person's answer bound by the hash the same person's query alone would have.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, TypeVar
from urllib.parse import unquote

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sandbox.behaviour import FaultKind
from shared.identity import IdentityNumber, InvalidIdentityNumber, parse_identity_number

CONSENT_HEADER = "Bangfu-Consent-Id"
PURPOSE_HEADER = "Bangfu-Purpose"
HASH_HEADER = "Bangfu-Request-Hash"
STATUS_HEADER = "Bangfu-Status"
MAX_PEOPLE = 50  # people one request may ask about

M = TypeVar("M", bound=BaseModel)


class Rejected(Exception):
    """A query the department refuses, with the status it answers (400, 404, 422, 500)."""

    def __init__(self, status: int, type_: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.type_ = type_
        self.detail = detail

    def error(self) -> dict[str, Any]:
        """The error as the answer's JSON carries it (where there is no problem+json)."""
        return {"status": self.status, "type": self.type_, "detail": self.detail}

    def error_body(self) -> bytes:
        """The body of an error on NATS."""
        return encode({"error": self.error()})


class QueryBody(BaseModel):
    """The request: one person, and optionally the day the answer describes."""

    model_config = ConfigDict(extra="forbid")

    identity_number: str
    as_of: date | None = None


class PersonQuery(QueryBody):
    """One person of a request about several, with the consent id that covers them."""

    consent_id: str = Field(min_length=1, max_length=200)


class QueriesBody(BaseModel):
    """The request about several people: each asked as their own query would ask."""

    model_config = ConfigDict(extra="forbid")

    people: list[PersonQuery] = Field(min_length=1, max_length=MAX_PEOPLE)


@dataclass(frozen=True)
class Query:
    """A query that passed the department's checks."""

    department: str
    identity: IdentityNumber
    as_of: date
    consent_id: str
    purpose: str
    request_hash: str


@dataclass(frozen=True)
class Reply:
    """The answer as the department sends it: `body` is already broken if a fault says so."""

    body: bytes
    headers: dict[str, str]
    fault: FaultKind | None = None
    drip_seconds: float = 0.0


def encode(body: Any) -> bytes:
    """JSON as every answer is sent, the same bytes on both transports."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def request_hash(*, department: str, body: Any, consent_id: str, purpose: str) -> str:
    """SHA-256 hex of the canonical JSON of [department, request body, consent id, purpose]."""
    canonical = json.dumps(
        [department, body, consent_id, purpose],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def parse_query(*, department: str, raw: bytes, headers: Mapping[str, str], today: date) -> Query:
    """Check the headers, then the body, as a strict department does; raise Rejected."""
    consent_id = _header(headers, CONSENT_HEADER, "the consent (授权书) id")
    # Header values are Latin-1, so the purpose travels as percent-encoded UTF-8.
    purpose = unquote(_header(headers, PURPOSE_HEADER, "the purpose of the query"))
    document = _json(raw)
    body = _validated(QueryBody, document)
    return _person(department, body, document, consent_id=consent_id, purpose=purpose, today=today)


def parse_queries(
    *, department: str, raw: bytes, headers: Mapping[str, str], today: date
) -> list[Query | Rejected]:
    """A request about several people: the purpose header and the body's shape are checked
    for all (Rejected raised), each person on their own (Rejected in their place)."""
    purpose = unquote(_header(headers, PURPOSE_HEADER, "the purpose of the query"))
    document = _json(raw)
    body = _validated(QueriesBody, document)
    parsed: list[Query | Rejected] = []
    for person, given in zip(body.people, document["people"], strict=True):
        # Hashed as this person's query alone would be: its body without the consent id.
        alone = {k: v for k, v in given.items() if k != "consent_id"}
        try:
            parsed.append(
                _person(
                    department,
                    person,
                    alone,
                    consent_id=person.consent_id,
                    purpose=purpose,
                    today=today,
                )
            )
        except Rejected as exc:
            parsed.append(exc)
    return parsed


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise Rejected(400, "malformed-json", "the request body is not valid JSON") from None


def _validated(model: type[M], document: Any) -> M:
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'body'}: {error['msg']}"
            for error in exc.errors()
        )
        raise Rejected(422, "invalid-input", reasons) from None


def _person(
    department: str,
    body: QueryBody,
    document: dict[str, Any],
    *,
    consent_id: str,
    purpose: str,
    today: date,
) -> Query:
    """One person's query from its validated body (`document` as sent, for the hash); raise
    Rejected."""
    try:
        identity = parse_identity_number(body.identity_number, today=today)
    except InvalidIdentityNumber as exc:
        raise Rejected(422, "invalid-identity-number", f"identity_number: {exc}") from None
    as_of = body.as_of or today
    if as_of > today:
        raise Rejected(422, "invalid-input", f"as_of: {as_of} is after today ({today})")
    if as_of < identity.birth_date:
        raise Rejected(422, "invalid-input", f"as_of: {as_of} is before the person was born")
    return Query(
        department=department,
        identity=identity,
        as_of=as_of,
        consent_id=consent_id,
        purpose=purpose,
        request_hash=request_hash(
            department=department, body=document, consent_id=consent_id, purpose=purpose
        ),
    )


def _header(headers: Mapping[str, str], name: str, what: str) -> str:
    # HTTP's headers look up without case; NATS's are a dict, scanned only if not as written.
    found = headers.get(name)
    if found is None:
        wanted = name.lower()
        found = next((v for k, v in headers.items() if k.lower() == wanted), "")
    value = found.strip()
    if not value:
        raise Rejected(400, "missing-header", f"the {name} header is required: it carries {what}")
    return value
