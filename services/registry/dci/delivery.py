"""Delivery of callbacks and notifications: from the dci_delivery table, signed when sent,
retried with backoff, in order per ordering key, dead after the last attempt (kept, logged).

The rows are written in the request's (or event's) transaction, before the ACK: a process that
dies between ACK and callback delivers it when it starts again.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import socket
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog

from services.registry.dci import store
from services.registry.dci.signing import Signer
from shared.crypto import Keyring
from shared.db import Database

log = structlog.get_logger(__name__)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class DestinationRefused(ValueError):
    """A sender_uri this registry will not call (err.sender_uri.invalid)."""


class DestinationPolicy:
    """Callbacks go to public addresses, and to the networks the operator allows (departments
    inside); never to loopback, private or link-local addresses otherwise."""

    def __init__(self, allowed_networks: tuple[Network, ...]):
        self.allowed_networks = allowed_networks

    def _check_address(self, address: Address) -> None:
        if any(address in network for network in self.allowed_networks):
            return
        if not address.is_global:
            raise DestinationRefused(
                f"{address} is not a public address and no allowed network holds it"
            )

    def check_url(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise DestinationRefused("sender_uri must be an http or https URL")
        if parts.username or parts.password:
            raise DestinationRefused("sender_uri must not carry credentials")
        if not parts.hostname:
            raise DestinationRefused("sender_uri has no host")
        try:
            address = ipaddress.ip_address(parts.hostname)
        except ValueError:
            return  # a name: its addresses are checked when it is called
        self._check_address(address)

    async def check_resolved(self, url: str) -> None:
        host = urlsplit(url).hostname or ""
        try:
            ipaddress.ip_address(host)
            return self.check_url(url)
        except ValueError:
            pass
        loop = asyncio.get_running_loop()
        try:
            found = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise DestinationRefused(f"{host} does not resolve") from exc
        for *_, sockaddr in found:
            self._check_address(ipaddress.ip_address(sockaddr[0]))


class DeliveryWorker:
    """Polls for due deliveries and POSTs them; one per registry process."""

    def __init__(
        self,
        db: Database,
        signer: Signer,
        policy: DestinationPolicy,
        keyring: Keyring,
        *,
        max_attempts: int,
        backoff_base_seconds: float,
        backoff_cap_seconds: float,
        poll_seconds: float,
        timeout_seconds: float,
    ):
        self.db = db
        self.signer = signer
        self.policy = policy
        self.keyring = keyring
        self.max_attempts = max_attempts
        self.backoff_base_seconds = backoff_base_seconds
        self.backoff_cap_seconds = backoff_cap_seconds
        self.poll_seconds = poll_seconds
        self.timeout_seconds = timeout_seconds
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="dci-delivery")

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        async with httpx.AsyncClient(
            timeout=self.timeout_seconds, follow_redirects=False
        ) as client:
            while True:
                try:
                    sent = await self.deliver_due(client)
                except Exception as exc:  # noqa: BLE001 - logged; the next round tries again
                    log.warning("dci.delivery_round_failed", error=repr(exc))
                    sent = 0
                if sent:
                    continue
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_seconds)

    def _backoff(self, attempts: int) -> timedelta:
        delay = min(self.backoff_cap_seconds, self.backoff_base_seconds * 2 ** (attempts - 1))
        return timedelta(seconds=delay * random.uniform(0.5, 1.0))

    async def deliver_due(self, client: httpx.AsyncClient) -> int:
        """Send the head of each ordering key that is due; the number of attempts made."""
        now = datetime.now(UTC)
        lease = now + timedelta(seconds=2 * self.timeout_seconds)
        async with self.db.sessionmaker() as session, session.begin():
            found = await store.due_deliveries(session, now=now, limit=20)
            due = [row for row in found if await store.claim(session, row, until=lease)]
        if not due:
            return 0
        results = await asyncio.gather(*(self._attempt(client, row) for row in due))
        async with self.db.sessionmaker() as session, session.begin():
            for row, error in zip(due, results, strict=True):
                attempts = row["attempts"] + 1
                done = datetime.now(UTC)
                if error is None:
                    status = "delivered"
                elif attempts >= self.max_attempts:
                    status = "dead"
                    log.error(
                        "dci.delivery_dead", delivery_id=row["id"], url=row["url"], error=error
                    )
                else:
                    status = "pending"
                await store.record_attempt(
                    session,
                    row["id"],
                    status=status,
                    attempts=attempts,
                    next_attempt_at=done + self._backoff(attempts),
                    error=error,
                    now=done,
                )
        return len(due)

    async def _attempt(self, client: httpx.AsyncClient, row: dict[str, Any]) -> str | None:
        """None when delivered, else why not."""
        header = row["body"]["header"]
        message = store.unseal(self.keyring, row["body"])
        envelope = {
            "signature": self.signer.sign(header, message),
            "header": header,
            "message": message,
        }
        try:
            await self.policy.check_resolved(row["url"])
            response = await client.post(row["url"], json=envelope)
        except DestinationRefused as exc:
            return f"refused: {exc}"
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"[:1000]
        if response.is_success:
            return None
        return f"HTTP {response.status_code}: {response.text[:300]}"
