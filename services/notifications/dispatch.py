"""The message dispatcher: sends queued SMS and email, and follows SMS delivery reports.

Inbox messages are delivered when stored and webhook referrals are queued as deliveries when
stored, so only SMS and email pass through here. A refusal (no number, a refused number) fails
the message at once; any other failure — a channel down, a registry token without `pii:read`,
anything unforeseen — is retried with backoff up to `message_max_attempts`, then the message
fails with its reason. Either way one message's failure is its own: the batch goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import structlog

from services.notifications import service, store
from services.notifications.channels.email import MailUnavailable, SmtpMailer
from services.notifications.channels.sms import GatewayRefused, GatewayUnavailable, SmsGateway
from services.notifications.domain.webhooks import backoff_seconds
from services.notifications.settings import NotificationsSettings
from shared.db import Database, UnitOfWork
from shared.registry_client import HouseholdNotFound, RegistryClient, RegistryUnavailable

log = structlog.get_logger(__name__)


class Unsendable(Exception):
    """No retry can send this message (no phone on file, a refused number)."""


class Dispatcher:
    """Sends due SMS and email messages until stopped."""

    def __init__(
        self,
        db: Database,
        settings: NotificationsSettings,
        *,
        registry: Callable[[], RegistryClient],
        gateway: SmsGateway,
        mailer: SmtpMailer,
    ):
        self._db = db
        self._settings = settings
        # A factory, not a client: a token the registry refuses is renewed by making a new one.
        self._new_registry = registry
        self._registry = registry()
        self._gateway = gateway
        self._mailer = mailer
        self._rng = random.Random()
        self._last_poll = 0.0
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(
        cls,
        db: Database,
        settings: NotificationsSettings,
        *,
        registry: Callable[[], RegistryClient] | None = None,
    ) -> Dispatcher:
        """The channels as configured; `registry` makes registry clients (default: settings')."""
        key = settings.sms_gateway_key
        return cls(
            db,
            settings,
            registry=registry or (lambda: RegistryClient.from_settings(settings)),
            gateway=SmsGateway(
                settings.sms_gateway_url, api_key=key.get_secret_value() if key else None
            ),
            mailer=SmtpMailer(
                settings.smtp_host,
                settings.smtp_port,
                sender=settings.email_from,
                timeout=settings.smtp_timeout_seconds,
            ),
        )

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="message-dispatcher")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._registry.aclose()
        await self._gateway.aclose()

    async def _run(self) -> None:
        while True:
            try:
                busy = await self.run_once()
                loop_time = asyncio.get_running_loop().time()
                if loop_time - self._last_poll >= self._settings.sms_report_poll_seconds:
                    self._last_poll = loop_time
                    await self.follow_reports()
            except Exception as exc:  # noqa: BLE001 - keep dispatching after a hiccup
                log.warning("dispatch.failed", error=repr(exc))
                busy = 0
            if not busy:
                await asyncio.sleep(self._settings.worker_poll_seconds)

    async def run_once(self) -> int:
        """Send one batch of due messages; how many were tried."""
        now = datetime.now(UTC)
        async with self._db.unit_of_work() as uow:
            claimed = await store.claim_messages(
                uow.session, now=now, lease_until=now + timedelta(minutes=2), limit=50
            )
            await uow.commit()
        for row in claimed:
            await self._send(row)
        return len(claimed)

    async def _send(self, row: Mapping[str, Any]) -> None:
        try:
            gateway_id = await self._deliver(row)
        except Unsendable as exc:
            await self._fail({**row, "attempts": row["attempts"] + 1}, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - one message's failure must not end the batch
            await self._retry(row, _reason(exc))
            return
        now = datetime.now(UTC)
        async with self._db.unit_of_work() as uow:
            values = {"status": "sent", "sent_at": now, "leased_until": None}
            await store.update_message(
                uow.session,
                row["id"],
                **values,
                gateway_id=gateway_id,
                attempts=row["attempts"] + 1,
            )
            uow.publish(service.notification_event(row, name="sent", now=now))
            await uow.commit()

    async def _deliver(self, row: Mapping[str, Any]) -> str | None:
        if row["channel"] == "sms":
            phone = await self._phone(row["household_id"])
            try:
                return await self._gateway.send(to=phone, text=row["body"], reference=row["id"])
            except GatewayRefused as exc:
                raise Unsendable(str(exc)) from exc
        if row["channel"] == "email":
            key = row["recipient_key"]
            address = self._settings.email_addresses.get(key) or (
                f"{key.replace(':', '-')}@{self._settings.email_domain}"
            )
            await self._mailer.send(
                to=address, subject=row["subject"] or "", body=row["body"], message_id=row["id"]
            )
            return None
        raise Unsendable(f"channel {row['channel']} is not sent by the dispatcher")

    async def _phone(self, household_id: str) -> str:
        """The head's mobile number, read from the registry with pii:read; never stored here."""
        try:
            household = await self._household(household_id)
        except HouseholdNotFound as exc:
            raise Unsendable("the household is not in the registry") from exc
        members = household.get("members", [])
        ordered = sorted(members, key=lambda m: m.get("relation") != "head")
        for member in ordered:
            if member.get("phone") and "*" not in str(member["phone"]):
                return str(member["phone"])
        raise Unsendable("no mobile number on file for the household")

    async def _household(self, household_id: str) -> dict[str, Any]:
        """The file with identity numbers and phones. A token from the identity provider that
        the registry refuses (401) the client renews once itself; a development token is
        re-issued here, by making a new client, and the read repeated."""
        purpose = "notifications: SMS to the household"
        try:
            return await self._registry.household(household_id, pii=True, purpose=purpose)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 401:
                raise
        log.info("dispatch.registry_token_renewed")
        await self._registry.aclose()
        self._registry = self._new_registry()
        return await self._registry.household(household_id, pii=True, purpose=purpose)

    async def _retry(self, row: Mapping[str, Any], reason: str) -> None:
        attempts = row["attempts"] + 1
        if attempts >= self._settings.message_max_attempts:
            await self._fail({**row, "attempts": attempts}, reason)
            return
        wait = backoff_seconds(
            attempts,
            base=self._settings.message_backoff_base_seconds,
            cap=self._settings.message_backoff_cap_seconds,
            rng=self._rng,
        )
        async with self._db.unit_of_work() as uow:
            await store.update_message(
                uow.session,
                row["id"],
                attempts=attempts,
                reason=reason,
                leased_until=None,
                not_before=datetime.now(UTC) + timedelta(seconds=wait),
            )
            await uow.commit()

    async def _fail(self, row: Mapping[str, Any], reason: str) -> None:
        async with self._db.unit_of_work() as uow:
            await fail(uow, row, reason)
            await uow.commit()

    async def follow_reports(self) -> None:
        """Ask the gateway about sent SMS: delivered, or failed with the operator's reason."""
        async with self._db.unit_of_work() as uow:
            pending = await store.sms_awaiting_report(uow.session, limit=100)
        for row in pending:
            if not row["gateway_id"]:
                continue
            try:
                report = await self._gateway.report(row["gateway_id"])
            except (GatewayUnavailable, GatewayRefused):
                return
            if report.status not in ("delivered", "failed"):
                continue
            async with self._db.unit_of_work() as uow:
                if report.status == "delivered":
                    await store.update_message(
                        uow.session, row["id"], status="delivered", delivered_at=datetime.now(UTC)
                    )
                else:
                    await fail(uow, row, report.reason or "the operator reported a failure")
                await uow.commit()


def _reason(exc: Exception) -> str:
    """Why a send failed, as the message's `reason` says it."""
    if isinstance(exc, PermissionError):
        return "the service has no registry token with pii:read to read the phone number"
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        return f"the registry refused the service's token ({status})"
    if isinstance(exc, (GatewayUnavailable, MailUnavailable, RegistryUnavailable)):
        return str(exc)
    log.warning("dispatch.send_failed", error=repr(exc))
    return f"{type(exc).__name__}: {exc}"[:500]


async def fail(uow: UnitOfWork, row: Mapping[str, Any], reason: str) -> None:
    """Mark a message failed and say so on the bus (`notification.failed`)."""
    await store.update_message(
        uow.session,
        row["id"],
        status="failed",
        reason=reason,
        attempts=row["attempts"],
        leased_until=None,
    )
    uow.publish(
        service.notification_event({**row, "reason": reason}, name="failed", now=datetime.now(UTC))
    )
