"""The durable scheduler: schedules live in the database and fire once, whatever happens.

A replica claims due rows with `FOR UPDATE SKIP LOCKED` (PostgreSQL) or under SQLite's single
writer, fires them and marks them fired in the same transaction as the messages they cause:
a crash before the commit leaves them unfired for the next pass, a second replica never sees
a row that another holds, and after downtime every row that fell due meanwhile is still
unfired and fires on the first pass (catch-up).

Each schedule fires in a savepoint of its own: one whose firing raises (a rule naming a
template not deployed, a bad row) is undone alone, with its messages and their events, and the
rest of the batch fires. It is tried again after a backoff, at most `scheduler_max_attempts`
times in all; then it ends `failed` with the reason, instead of stalling every batch it is in.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter

from services.notifications import follow_up, service, store
from services.notifications.domain import schedule as schedules
from shared.db import Database, UnitOfWork

log = structlog.get_logger(__name__)


class Scheduler:
    def __init__(
        self,
        db: Database,
        engine: service.Engine,
        *,
        name: str = "",
        registry: CollectorRegistry | None = None,
    ):
        self._db = db
        self._engine = engine
        self.name = name or f"{socket.gethostname()}:{id(self):x}"
        self._task: asyncio.Task[None] | None = None
        self._failures = Counter(
            "bangfu_notification_schedule_failures",
            "Schedule firings that failed, by kind: retrying, or failed after the last attempt",
            ["kind", "outcome"],
            registry=registry,
        )
        for kind in schedules.KINDS:  # the series are there at 0 from the start
            for outcome in ("retrying", "failed"):
                self._failures.labels(kind=kind, outcome=outcome)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="scheduler")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        settings = self._engine.settings
        while True:
            try:
                fired = await self.run_once()
            except Exception as exc:  # noqa: BLE001 - the rows stay due; try again next pass
                log.warning("scheduler.failed", error=repr(exc))
                fired = 0
            if fired < settings.scheduler_batch_size:
                await asyncio.sleep(settings.worker_poll_seconds * 4)

    async def run_once(self, *, now: datetime | None = None) -> int:
        """Fire one batch of due schedules, each alone; how many were claimed."""
        now = now or datetime.now(UTC)
        async with self._db.unit_of_work() as uow:
            due = await store.claim_due_schedules(
                uow.session, now=now, limit=self._engine.settings.scheduler_batch_size
            )
            for row in due:
                try:
                    async with uow.savepoint():
                        outcome = await follow_up.fire(uow, self._engine, row, now=now)
                        await store.mark_fired(
                            uow.session, row["id"], at=now, outcome=outcome, by=self.name
                        )
                except Exception as exc:  # noqa: BLE001 - this schedule's fault, not the batch's
                    await self._attempt_failed(uow, row, exc, now=now)
            await uow.commit()
        if due:
            log.info("scheduler.fired", count=len(due), replica=self.name)
        return len(due)

    async def _attempt_failed(
        self, uow: UnitOfWork, row: Mapping[str, Any], exc: Exception, *, now: datetime
    ) -> None:
        """Count the attempt: due again after the backoff, or `failed` after the last one."""
        settings = self._engine.settings
        attempt = row["attempts"] + 1
        # The first line only: a database error goes on with its SQL and parameters.
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        about = {
            "schedule_id": row["id"],
            "kind": row["kind"],
            "household_id": row["household_id"],
            "period": row["period"],
            "attempt": attempt,
            "reason": reason,
            "replica": self.name,
        }
        if attempt >= settings.scheduler_max_attempts:
            await store.fail_schedule(uow.session, row["id"], at=now, reason=reason, by=self.name)
            log.error("scheduler.schedule_failed", **about)
            self._failures.labels(kind=row["kind"], outcome="failed").inc()
            return
        delay = min(
            settings.scheduler_backoff_cap_seconds,
            settings.scheduler_backoff_base_seconds * 2 ** (attempt - 1),
        )
        retry_at = now + timedelta(seconds=delay)
        await store.retry_schedule(uow.session, row["id"], due_at=retry_at, reason=reason)
        log.warning("scheduler.attempt_failed", retry_at=retry_at.isoformat(), **about)
        self._failures.labels(kind=row["kind"], outcome="retrying").inc()
