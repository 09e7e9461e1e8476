"""`bangfu_notification_sent_total` and `bangfu_notification_failures_total`, from the messages.

Messages reach `sent`, `delivered` or `failed` in several places (the dispatcher, the webhook
worker, the inbox, a referral with no subscriber); the message table is the one place that
sees them all, so the counters are read from it (`metrics_refresh_seconds`, 30 by default).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import structlog
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from services.notifications import store
from shared.db import Database

log = structlog.get_logger(__name__)


class MessageOutcomes(Collector):
    """A Prometheus collector of message outcomes, and the task that keeps it current."""

    def __init__(self, *, refresh_seconds: float = 30.0):
        self.db: Database | None = None
        self._refresh = refresh_seconds
        self._sent: dict[str, int] = {}
        self._failed: dict[tuple[str, str], int] = {}
        self._task: asyncio.Task[None] | None = None

    def collect(self) -> Iterator[CounterMetricFamily]:
        sent = CounterMetricFamily(
            "bangfu_notification_sent", "Notices sent or delivered, by channel", labels=["channel"]
        )
        for channel, count in sorted(self._sent.items()):
            sent.add_metric([channel], count)
        yield sent
        failed = CounterMetricFamily(
            "bangfu_notification_failures",
            "Notices that could not be sent, by channel and reason",
            labels=["channel", "reason"],
        )
        for (channel, reason), count in sorted(self._failed.items()):
            failed.add_metric([channel, reason], count)
        yield failed

    async def refresh(self) -> None:
        assert self.db is not None
        async with self.db.unit_of_work() as uow:
            rows = await store.message_outcomes(uow.session)
        sent: dict[str, int] = {}
        failed: dict[tuple[str, str], int] = {}
        for row in rows:
            if row["status"] == "failed":
                # The first words of the reason: enough to group by, few enough label values.
                reason = (row["reason"] or "unknown")[:60]
                key = (row["channel"], reason)
                failed[key] = failed.get(key, 0) + row["count"]
            else:
                sent[row["channel"]] = sent.get(row["channel"], 0) + row["count"]
        self._sent, self._failed = sent, failed

    def start(self, db: Database) -> None:
        self.db = db
        self._task = asyncio.create_task(self._loop(), name="notification-metrics")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # noqa: BLE001 - a metric must never take the service down
                log.exception("notification.metrics_refresh_failed")
            await asyncio.sleep(self._refresh)
