"""The sandbox's use cases, shared by both transports: answer a query, publish a change."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any

from nats.aio.client import Client as NATS

from sandbox.behaviour import Behaviour, Behaviours, FaultKind
from sandbox.changes import ChangeRequest, change_event, check_change
from sandbox.clock import Clock
from sandbox.departments import DEPARTMENTS, Department
from sandbox.people import Change, person_of
from sandbox.protocol import (
    CONSENT_HEADER,
    HASH_HEADER,
    Query,
    Rejected,
    Reply,
    encode,
    parse_queries,
    parse_query,
)
from shared.events.envelope import CONTENT_TYPE, CloudEvent
from shared.identity import feed_index


class Sandbox:
    """Every department at once: deterministic answers, with the latency and faults set."""

    def __init__(
        self,
        *,
        behaviours: Behaviours,
        index_key: bytes,
        today: Callable[[], date] = date.today,
    ) -> None:
        self.behaviours = behaviours
        self.nc: NATS | None = None
        self._index_key = index_key
        self._today = today
        self._changes: dict[str, list[Change]] = defaultdict(list)
        self._sequences: Counter[tuple[str, str]] = Counter()
        self.answered: Counter[str] = Counter()
        self.faulted: Counter[str] = Counter()
        # Answers on time to the tenth of a millisecond, not the loop's whole ones.
        self.clock = Clock()
        # Each department's HTTP callers by address: how many connections they opened.
        self._peers: defaultdict[str, set[str]] = defaultdict(set)

    def department(self, code: str) -> Department:
        department = DEPARTMENTS.get(code)
        if department is None:
            known = ", ".join(DEPARTMENTS)
            raise Rejected(404, "unknown-department", f"no department {code!r}; known: {known}")
        return department

    async def query(
        self, code: str, *, raw: bytes, headers: Mapping[str, str], arrived: float | None = None
    ) -> Reply:
        """Check the query, and answer (or fault) once the department's latency has passed
        since it `arrived` (`time.monotonic()`; now if not given)."""
        answer_at = await self._arrived(code, arrived)
        department = self.department(code)
        query = parse_query(department=code, raw=raw, headers=headers, today=self._today())
        answer = self._render(department, query)
        fault = self._fault(code, query)
        reply = Reply(
            body=_broken(answer, fault),
            headers={HASH_HEADER: query.request_hash, CONSENT_HEADER: query.consent_id},
            fault=fault,
            drip_seconds=self.behaviours.get(code).drip_seconds,
        )
        await self.clock.until(answer_at)
        return reply

    async def query_many(
        self, code: str, *, raw: bytes, headers: Mapping[str, str], arrived: float | None = None
    ) -> Reply:
        """Several people in one request: one wait of the department's latency, an answer per
        person in the order asked (an error in the place of a person it refuses).

        A fault of the whole exchange (a timeout, a 5xx, a slow drip, a body cut off) that any
        person's query would get is the request's; a wrong schema is that person's answer.
        """
        answer_at = await self._arrived(code, arrived)
        department = self.department(code)
        parsed = parse_queries(department=code, raw=raw, headers=headers, today=self._today())
        answers = [
            item if isinstance(item, Rejected) else self._render(department, item)
            for item in parsed
        ]
        # The whole answer is made before the wait, inside the latency, as a department's
        # work is: made after it, the answers of requests that came together went out one
        # behind another's encoding (the last of a household's 11 a millisecond later,
        # bench/verification.py).
        items: list[dict[str, Any]] = []
        request_fault: FaultKind | None = None
        for query, answer in zip(parsed, answers, strict=True):
            if isinstance(answer, Rejected):
                items.append({"status": answer.status, "error": answer.error()})
                continue
            assert isinstance(query, Query)
            fault = self._fault(code, query)
            if fault == "wrong_schema":
                answer = _wrong_schema(answer)
            elif fault and request_fault is None:
                request_fault = fault
            items.append({"status": 200, "request_hash": query.request_hash, "answer": answer})
        body = encode({"answers": items})
        if request_fault == "malformed_json":
            body = body[: len(body) // 2]
        reply = Reply(
            body=body,
            headers={},
            fault=request_fault,
            drip_seconds=self.behaviours.get(code).drip_seconds,
        )
        await self.clock.until(answer_at)
        return reply

    async def _arrived(self, code: str, arrived: float | None) -> float:
        """When the department answers a request that `arrived` (now if not given); back
        once the requests that came with it have arrived too.

        Its latency includes the work of answering, as a department's own does. But the 11
        departments share this process and its CPU, where each real one has its own: a
        request's clock starts when its bytes were read (`ArrivalStampingProtocol`, NATS's
        message callback), not when its handler got its turn behind the others' (2 ms for the
        last of a household's 11, bench/verification.py). Without that time, the requests
        that came together each take theirs before any does its work.
        """
        if arrived is None:
            arrived = time.monotonic()
            await asyncio.sleep(0)  # the tasks of the others that came are queued behind this one
        return arrived + self.behaviours.delay_seconds(code)

    def _render(self, department: Department, query: Query) -> dict[str, Any]:
        number = query.identity.number
        person = person_of(query.identity, as_of=query.as_of, changes=self._changes.get(number, ()))
        return department.render(person)

    def _fault(self, code: str, query: Query) -> FaultKind | None:
        """The fault this answer gets, if any, counted with the answers."""
        fault = self.behaviours.fault_for(code, query.identity.number)
        self.answered[code] += 1
        if fault:
            self.faulted[code] += 1
        return fault

    def connected(self, code: str, peer: str) -> None:
        """Note the HTTP connection (the caller's host:port) a query came on."""
        self._peers[code].add(peer)

    def view(self, code: str) -> dict[str, Any]:
        """A department as the admin endpoint shows it."""
        department = self.department(code)
        return {
            "code": code,
            "name": department.name,
            "holder": department.holder,
            "monthly_snapshot": department.monthly,
            "change_kinds": list(department.change_kinds),
            "behaviour": self.behaviours.get(code).model_dump(mode="json"),
            "answered": self.answered[code],
            "faulted": self.faulted[code],
            "connections": len(self._peers[code]),
        }

    def set_behaviour(self, code: str, behaviour: Behaviour | None) -> None:
        """Set (or, with None, reset) a department's latency and faults."""
        self.department(code)
        if behaviour is None:
            self.behaviours.reset(code)
        else:
            self.behaviours.set(code, behaviour)

    async def publish_change(self, request: ChangeRequest) -> CloudEvent:
        """Publish a change on the department's feed; later answers reflect it."""
        if self.nc is None:
            raise Rejected(503, "nats-unavailable", "the change feed needs NATS, which is off")
        today = self._today()
        identity = check_change(request, today=today)
        effective = request.effective_date or today
        index = feed_index(identity.number, key=self._index_key)
        self._sequences[(request.department, index)] += 1
        event = change_event(
            request,
            identity,
            key=self._index_key,
            sequence=self._sequences[(request.department, index)],
            effective_date=effective,
        )
        headers = {"Nats-Msg-Id": event.id, "Content-Type": CONTENT_TYPE}
        await self.nc.publish(event.nats_subject, event.to_json(), headers=headers)
        await self.nc.flush()
        self._changes[identity.number].append(Change(request.kind, effective))
        return event


def _broken(answer: dict[str, Any], fault: FaultKind | None) -> bytes:
    """The answer's bytes, or what a faulty department sends instead."""
    if fault == "wrong_schema":
        return encode(_wrong_schema(answer))
    body = encode(answer)
    if fault == "malformed_json":
        # Cut off mid-document, as a proxy that drops the connection would.
        return body[: len(body) // 2]
    return body


def _wrong_schema(answer: dict[str, Any]) -> dict[str, Any]:
    """Well-formed, but the shape of some other system's API (pinyin abbreviations)."""
    return {
        "code": "0000",
        "msg": "查询成功",
        "data": {
            "total": 1,
            "rows": [{"sfzh": answer["identity_number_masked"], "cxrq": answer["as_of"]}],
        },
    }
