"""The webhook delivery worker: lease due deliveries, post them signed, record what happened.

Several replicas may run it against one database: a claim leases rows (`leased_until`) under
`FOR UPDATE SKIP LOCKED`, and only the head of each (subscription, household) queue is
claimable, so a household's deliveries arrive in order even across replicas. The HTTP posts
happen outside any transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from services.notifications import service, store, webhooks
from services.notifications.channels.webhook import POST_ERRORS, WebhookPools
from services.notifications.domain.destinations import DestinationRefused
from services.notifications.domain.webhooks import (
    DELIVERY_HEADER,
    EVENT_TYPE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    backoff_seconds,
    signature,
)
from services.notifications.settings import NotificationsSettings
from shared.crypto import DecryptionError, Keyring, decrypt
from shared.db import Database, as_utc

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class DeliveryWorker:
    """Sends queued webhook deliveries until stopped."""

    def __init__(
        self,
        db: Database,
        settings: NotificationsSettings,
        keyring: Keyring,
        *,
        rng: random.Random | None = None,
    ):
        self._db = db
        self._settings = settings
        self._keyring = keyring
        self._rng = rng or random.Random()
        self._secrets: dict[str, str] = {}
        self._destinations = settings.destination_policy()
        self._http = WebhookPools(
            self._destinations,
            timeout=settings.webhook_timeout_seconds,
            concurrency=settings.webhook_concurrency,
        )
        # Requests waiting inside httpx's pool cost O(waiting × connections) per step: wait here.
        self._gate = asyncio.Semaphore(settings.webhook_concurrency)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        # Two loops, so that one claims and posts while the other waits for its batch's
        # slowest posts and records them: the connections stay busy between batches.
        self._tasks = [
            asyncio.create_task(self._run(), name=f"webhook-deliveries-{n}") for n in range(2)
        ]

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._http.aclose()

    async def _run(self) -> None:
        while True:
            try:
                sent = await self.run_once()
            except Exception as exc:  # noqa: BLE001 - keep delivering after a database hiccup
                log.warning("webhook.worker_failed", error=repr(exc))
                sent = 0
            if not sent:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._settings.worker_poll_seconds)
                self._wake.clear()

    async def run_once(self) -> int:
        """Claim one batch, post it concurrently, record the outcomes; how many were tried."""
        settings = self._settings
        now = datetime.now(UTC)
        lease = now + timedelta(seconds=settings.webhook_timeout_seconds * 2 + 5)
        async with self._db.unit_of_work() as uow:
            claimed = await store.claim_deliveries(
                uow.session, now=now, lease_until=lease, limit=settings.webhook_batch_size
            )
            subscriptions = (
                {s["id"]: s for s in await store.live_subscriptions(uow.session)} if claimed else {}
            )
            await uow.commit()
        if not claimed:
            return 0
        outcomes = await asyncio.gather(
            *(self._post(row, subscriptions.get(row["subscription_id"])) for row in claimed)
        )
        await self._record(claimed, outcomes)
        return len(claimed)

    def _secret(self, subscription: Mapping[str, Any]) -> str:
        cached = self._secrets.get(subscription["secret_cipher"])
        if cached is None:
            cached = decrypt(
                self._keyring, subscription["secret_cipher"], context=webhooks.SECRET_CONTEXT
            )
            self._secrets[subscription["secret_cipher"]] = cached
        return cached

    async def _post(
        self, row: Mapping[str, Any], subscription: Mapping[str, Any] | None
    ) -> Outcome:
        """One attempt; what goes wrong is this delivery's outcome, never the whole batch's."""
        if subscription is None:
            return Outcome(None, "subscription deleted", 0)
        try:
            secret = self._secret(subscription)
        except DecryptionError as exc:
            log.warning("webhook.secret_unreadable", subscription=subscription["id"], error=exc)
            return Outcome(None, "the subscription's secret cannot be decrypted with our keys", 0)
        async with self._gate:
            body = row["body"].encode()
            timestamp = int(time.time())  # signed when sent, not when queued: stays fresh
            headers = [
                ("Content-Type", "application/cloudevents+json"),
                (DELIVERY_HEADER, row["id"]),
                (TIMESTAMP_HEADER, str(timestamp)),
                (SIGNATURE_HEADER, signature(secret, timestamp=timestamp, body=body)),
                (EVENT_TYPE_HEADER, row["event_type"]),
            ]
            started = time.perf_counter()
            try:
                # The URL's form is checked first (stored before the policy, or the allowed
                # networks changed); the connection then checks every address it resolves to.
                status = await self._http.post(subscription["url"], body, headers)
            except DestinationRefused as exc:
                return Outcome(None, str(exc), 0)
            except POST_ERRORS as exc:
                elapsed = int((time.perf_counter() - started) * 1000)
                return Outcome(None, f"{type(exc).__name__}: {exc}"[:500], elapsed)
        elapsed = int((time.perf_counter() - started) * 1000)
        error = None if 200 <= status < 300 else f"HTTP {status}"
        return Outcome(status, error, elapsed)

    async def _record(self, claimed: list[dict[str, Any]], outcomes: list[Outcome]) -> None:
        settings = self._settings
        now = datetime.now(UTC)
        retry_for = timedelta(seconds=settings.webhook_retry_seconds)
        async with self._db.unit_of_work() as uow:
            await store.record_attempts(
                uow.session,
                [
                    {
                        "delivery_id": row["id"],
                        "attempt": row["attempts"] + 1,
                        "at": now,
                        "status_code": outcome.status_code,
                        "error": outcome.error,
                        "duration_ms": outcome.duration_ms,
                    }
                    for row, outcome in zip(claimed, outcomes, strict=True)
                ],
            )
            results = [
                self._outcome(row, outcome, now=now, retry_for=retry_for)
                for row, outcome in zip(claimed, outcomes, strict=True)
            ]
            await store.record_outcomes(uow.session, results)
            for row, result in zip(claimed, results, strict=True):
                if row["message_id"] and result["status"] in ("delivered", "dead"):
                    await _settle_message(uow, row["message_id"], now=now)
            await uow.commit()

    def _outcome(
        self, row: Mapping[str, Any], outcome: Outcome, *, now: datetime, retry_for: timedelta
    ) -> dict[str, Any]:
        """The delivery after this attempt: delivered, dead, or pending a backed-off retry."""
        settings = self._settings
        attempts = row["attempts"] + 1
        first = as_utc(row["first_attempt_at"]) if row["first_attempt_at"] else now
        result: dict[str, Any] = {
            "position": row["position"],
            "status": "pending",
            "attempts": attempts,
            "first_attempt_at": first,
            "next_attempt_at": row["next_attempt_at"],
            "leased_until": None,
            "last_status_code": outcome.status_code,
            "last_error": outcome.error,
            "finished_at": None,
        }
        if outcome.ok:
            result.update(status="delivered", finished_at=now)
        elif now - first >= retry_for:
            result.update(status="dead", finished_at=now)
            log.warning("webhook.dead_lettered", delivery=row["id"], error=outcome.error)
        else:
            wait = backoff_seconds(
                attempts,
                base=settings.webhook_backoff_base_seconds,
                cap=settings.webhook_backoff_cap_seconds,
                rng=self._rng,
            )
            result["next_attempt_at"] = now + timedelta(seconds=wait)
        return result


async def _settle_message(uow: Any, message_id: str, *, now: datetime) -> None:
    """A referral by webhook is delivered once any of its deliveries is; failed when all died."""
    row = await store.get_message(uow.session, message_id)
    if row is None or row["status"] in ("delivered", "failed"):
        return
    counts = await store.message_deliveries_left(uow.session, message_id)
    if counts.get("delivered"):
        await store.update_message(uow.session, message_id, status="delivered", delivered_at=now)
    elif not counts.get("pending"):
        reason = "every webhook delivery was dead-lettered"
        await store.update_message(uow.session, message_id, status="failed", reason=reason)
        uow.publish(service.notification_event({**row, "reason": reason}, name="failed", now=now))
