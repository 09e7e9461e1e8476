"""The NATS side: request-reply on `bangfu.dept.<code>.query` (one person) and
`bangfu.dept.<code>.queries` (several), in the queue group `sandbox`.

Faults map to what a broken responder does on a bus: a timeout is no reply at all, a 5xx is an
error reply, a slow drip is a late reply (NATS has no partial messages).
"""

from __future__ import annotations

import asyncio
import time

import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from sandbox.departments import DEPARTMENTS
from sandbox.protocol import STATUS_HEADER, Rejected
from sandbox.service import Sandbox

log = structlog.get_logger(__name__)


def query_subject(code: str) -> str:
    return f"bangfu.dept.{code}.query"


def queries_subject(code: str) -> str:
    return f"bangfu.dept.{code}.queries"


class Responder:
    """Answers every department's queries; each message in a task of its own."""

    def __init__(self, nc: NATS, sandbox: Sandbox, *, queue: str) -> None:
        self._nc = nc
        self._sandbox = sandbox
        self._queue = queue
        self._subscriptions: list[Subscription] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        for code in DEPARTMENTS:
            for subject in (query_subject(code), queries_subject(code)):
                subscription = await self._nc.subscribe(
                    subject, queue=self._queue, cb=self._on_message
                )
                self._subscriptions.append(subscription)
        await self._nc.flush()

    async def stop(self) -> None:
        for subscription in self._subscriptions:
            await subscription.unsubscribe()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _on_message(self, msg: Msg) -> None:
        # nats.py runs one callback at a time per subscription: a department's latency must
        # not hold up the queries behind it.
        task = asyncio.create_task(self._answer(msg, time.monotonic()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, msg: Msg, arrived: float) -> None:
        if not msg.reply:
            return
        _, _, code, kind = msg.subject.split(".")
        answering = self._sandbox.query_many if kind == "queries" else self._sandbox.query
        try:
            reply = await answering(code, raw=msg.data, headers=msg.headers or {}, arrived=arrived)
        except Rejected as exc:
            await self._error(msg, exc)
            return
        except Exception:
            log.exception("sandbox.nats_query_failed", subject=msg.subject)
            await self._error(msg, Rejected(500, "internal-error", "the sandbox failed"))
            return
        if reply.fault == "timeout":
            return
        if reply.fault == "http_500":
            await self._error(
                msg, Rejected(500, "department-error", "the department's system failed")
            )
            return
        if reply.fault == "slow_drip":
            await asyncio.sleep(reply.drip_seconds)
        headers = {**reply.headers, STATUS_HEADER: "200"}
        await self._nc.publish(msg.reply, reply.body, headers=headers)

    async def _error(self, msg: Msg, exc: Rejected) -> None:
        headers = {STATUS_HEADER: str(exc.status)}
        await self._nc.publish(msg.reply, exc.error_body(), headers=headers)
