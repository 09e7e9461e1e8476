"""How a query reaches a department: HTTP (aiohttp) or NATS request-reply, chosen per department.

Every query carries the consent (授权书) id and the purpose, as X-Road's X-Road-Issue does, and
is bound to its answer by a request hash computed here and echoed by the department. Several
people (a household's members) go to a department in one request, each person's consent id in
the body and each answer bound by the hash of that person's query alone.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import aiohttp
import orjson
from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

CONSENT_HEADER = "Bangfu-Consent-Id"
PURPOSE_HEADER = "Bangfu-Purpose"
HASH_HEADER = "Bangfu-Request-Hash"
STATUS_HEADER = "Bangfu-Status"


class Unavailable(Exception):
    """The department did not answer (timeout, refused connection, 5xx): worth a retry."""


class Refused(Exception):
    """The department answered with an error that a retry will not change (4xx)."""


class Malformed(Exception):
    """The answer is not JSON, or not the shape the department's mapper expects."""


@dataclass(frozen=True)
class Query:
    department: str
    identity_number: str
    consent_id: str
    purpose: str
    as_of: str | None = None

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"identity_number": self.identity_number}
        if self.as_of:
            body["as_of"] = self.as_of
        return body

    def person(self) -> dict[str, Any]:
        """This person in a request about several: the body and the consent id."""
        return {**self.body(), "consent_id": self.consent_id}

    def headers(self) -> dict[str, str]:
        # Header values are Latin-1: the purpose travels percent-encoded UTF-8.
        return {CONSENT_HEADER: self.consent_id, PURPOSE_HEADER: quote(self.purpose)}

    @cached_property  # asked three times a query: the client, the item and the query log
    def request_hash(self) -> str:
        """SHA-256 hex of the canonical JSON (sorted keys, compact, UTF-8 unescaped) of
        [department, body, consent id, purpose], as the department makes it.

        orjson writes the strings it holds as `json.dumps(sort_keys=True, separators=(",",
        ":"), ensure_ascii=False)` does, in a tenth of the time: 44 a household, before its
        requests can leave."""
        canonical = orjson.dumps(
            [self.department, self.body(), self.consent_id, self.purpose],
            option=orjson.OPT_SORT_KEYS,
        )
        return hashlib.sha256(canonical).hexdigest()


@dataclass(frozen=True)
class Answer:
    body: dict[str, Any]
    raw: bytes
    echoed_hash: str | None

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()


# Each person's outcome in a request about several: an answer, or why there is none.
Outcome = Answer | Unavailable | Refused | Malformed


class Transport(Protocol):
    async def send(self, query: Query, *, timeout: float) -> Answer: ...

    async def send_many(self, queries: Sequence[Query], *, timeout: float) -> list[Outcome]: ...


def _many(queries: Sequence[Query]) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a request about several people (one department, one purpose)."""
    (purpose,) = {q.purpose for q in queries}
    body = json.dumps({"people": [q.person() for q in queries]}).encode()
    return body, {PURPOSE_HEADER: quote(purpose)}


def _outcomes(raw: bytes, queries: Sequence[Query]) -> list[Outcome]:
    """Each person's outcome from the answer to a request about several (Malformed, raised,
    when the answer as a whole is not one)."""
    answers = _parse(raw).get("answers")
    if not isinstance(answers, list) or len(answers) != len(queries):
        raise Malformed(f"not an answer for each of the {len(queries)} people asked")
    return [_outcome(item) for item in answers]


def _outcome(item: Any) -> Outcome:
    if not isinstance(item, dict) or not isinstance(item.get("status"), int):
        return Malformed("an answer in the list is not an object with a status")
    status: int = item["status"]
    if status >= 500:
        return Unavailable(f"status {status}")
    if status >= 400:
        return Refused(f"status {status}: {json.dumps(item.get('error'), ensure_ascii=False)}")
    answer = item.get("answer")
    if not isinstance(answer, dict):
        return Malformed("an answer in the list has no object")
    # This person's answer, as their query alone would have had it (the same bytes).
    raw = _compact(answer)
    return Answer(answer, raw, item.get("request_hash"))


def _not_json(constant: str) -> Any:
    """NaN and ±Infinity, which the standard library reads but JSON does not have."""
    raise json.JSONDecodeError(f"{constant} is not JSON", constant, 0)


def _compact(value: Any) -> bytes:
    """Compact JSON, as a department writes its answer: orjson, which writes what JSON holds
    as `json.dumps(ensure_ascii=False, separators=(",", ":"))` does but a float under 1e-4
    (in another form) in a tenth of the time (44 answers a household, on the loop while the
    rest come in); the standard library for an integer beyond 64 bits, which orjson refuses."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _parse(raw: bytes) -> dict[str, Any]:
    # The standard library: orjson reads an integer beyond 64 bits as a float, losing digits.
    try:
        body = json.loads(raw, parse_constant=_not_json)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Malformed(f"not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise Malformed("not a JSON object")
    return body


class HttpTransport:
    """`POST {base_url}/departments/{code}/query` (`/queries` for several people) through a
    department's aiohttp session.

    aiohttp rather than httpx (the suite's client everywhere else): through the department's
    client, the 11 queries a household asks cost this side 2.1–2.5 ms of CPU with aiohttp
    against 5.2–5.8 ms with httpx, even with httpx's client layers bypassed (issue 17,
    bench/README.md). A department query is the service's hottest path: 11 per member, tens
    of thousands in a batch.
    """

    def __init__(self, session: aiohttp.ClientSession, base_url: str):
        self._session = session
        self._base_url = base_url.rstrip("/")
        # The proxy from the environment (`HTTPS_PROXY`, `NO_PROXY`), as httpx takes it, read
        # once: aiohttp's trust_env reads the environment and ~/.netrc on every request,
        # which more than doubled the CPU of a query.
        url = urlsplit(self._base_url)
        bypass = urllib.request.proxy_bypass(url.hostname or "")
        self._proxy = None if bypass else urllib.request.getproxies().get(url.scheme)

    @staticmethod
    def session(*, connections: int) -> aiohttp.ClientSession:
        """A pool of at most `connections`, each kept alive while in use. Call in the loop."""
        # Idle for 5 s, a connection is closed here (as httpx does): a department server that
        # closes idle ones sooner than its caller fails the query that reuses one (a POST is
        # not retried on a stale connection).
        connector = aiohttp.TCPConnector(limit=connections, keepalive_timeout=5)
        # No session timeout: `send` sets each query's deadline, and aiohttp's own default
        # (5 minutes) cost a timer armed and cancelled per query.
        return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout())

    async def send(self, query: Query, *, timeout: float) -> Answer:
        url = f"{self._base_url}/departments/{query.department}/query"
        raw, headers = await self._post(
            url, json.dumps(query.body()).encode(), query.headers(), timeout
        )
        return Answer(_parse(raw), raw, headers.get(HASH_HEADER))

    async def send_many(self, queries: Sequence[Query], *, timeout: float) -> list[Outcome]:
        url = f"{self._base_url}/departments/{queries[0].department}/queries"
        raw, _ = await self._post(url, *_many(queries), timeout)
        return _outcomes(raw, queries)

    async def _post(
        self, url: str, data: bytes, headers: dict[str, str], timeout: float
    ) -> tuple[bytes, Any]:
        try:
            # A deadline for the whole answer: a slow drip must not outlast it either.
            async with (
                asyncio.timeout(timeout),
                self._session.post(
                    url,
                    data=data,
                    headers={"Content-Type": "application/json", **headers},
                    proxy=self._proxy,
                ) as response,
            ):
                raw = await response.read()
        except TimeoutError as exc:
            raise Unavailable(f"no answer within {timeout:g} s") from exc
        except aiohttp.ClientError as exc:
            raise Unavailable(f"cannot reach the department: {type(exc).__name__}") from exc
        if response.status >= 500:
            raise Unavailable(f"HTTP {response.status}")
        if response.status >= 400:
            raise Refused(f"HTTP {response.status}: {raw[:200].decode(errors='replace')}")
        return raw, response.headers


class NatsTransport:
    """Request-reply on `bangfu.dept.<code>.query` (`.queries` for several people) over the
    service's NATS connection."""

    def __init__(self, nc: NATS):
        self._nc = nc

    async def send(self, query: Query, *, timeout: float) -> Answer:
        subject = f"bangfu.dept.{query.department}.query"
        data = json.dumps(query.body()).encode()
        raw, headers = await self._request(subject, data, query.headers(), timeout)
        return Answer(_parse(raw), raw, headers.get(HASH_HEADER))

    async def send_many(self, queries: Sequence[Query], *, timeout: float) -> list[Outcome]:
        subject = f"bangfu.dept.{queries[0].department}.queries"
        raw, _ = await self._request(subject, *_many(queries), timeout)
        return _outcomes(raw, queries)

    async def _request(
        self, subject: str, data: bytes, headers: dict[str, str], timeout: float
    ) -> tuple[bytes, dict[str, str]]:
        if not (self._nc.is_connected or self._nc.is_reconnecting):
            # Not connected yet (the service started before NATS): the client would fail inside.
            raise Unavailable("NATS is not connected yet")
        try:
            reply = await self._nc.request(subject, data, timeout=timeout, headers=headers)
        except NatsTimeoutError as exc:
            raise Unavailable(f"no answer within {timeout:g} s") from exc
        except NoRespondersError as exc:
            raise Unavailable("no department is listening") from exc
        headers = reply.headers or {}
        status = headers.get(STATUS_HEADER, "200")
        if status.startswith("5"):
            raise Unavailable(f"status {status}")
        if status.startswith("4"):
            raise Refused(f"status {status}: {reply.data[:200]!r}")
        return reply.data, headers
