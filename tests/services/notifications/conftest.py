"""Fixtures of the notifications tests: the service, a real webhook receiver, event producers."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import nats
import pytest
from fastapi import FastAPI, Request, Response

from services.notifications import service
from services.notifications.app import create_app
from services.notifications.settings import NotificationsSettings
from shared.db import Database
from shared.events.envelope import CloudEvent, new_event
from shared.settings import SuiteSettings
from tests.conftest import running, serving

SECRET = "a-secret-of-the-department-0123"
# The receivers here listen on loopback, which the shipped destination policy refuses.
LOOPBACK = ["127.0.0.0/8", "::1/128"]


@dataclass
class Receiver:
    """A department's webhook endpoint: verifies each signature as the docs tell receivers to."""

    url: str = ""
    secret: str = SECRET
    down: bool = False
    received: list[dict[str, Any]] = field(default_factory=list)
    bad_signatures: int = 0
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/hook")
        async def hook(request: Request) -> Response:
            body = await request.body()
            if self.down:
                with self.lock:
                    self.refused += 1
                return Response(status_code=503)
            timestamp = request.headers["Bangfu-Webhook-Timestamp"]
            expected = hmac.new(
                self.secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256
            ).hexdigest()
            signature = request.headers["Bangfu-Webhook-Signature"]
            fresh = abs(time.time() - int(timestamp)) < 300
            if not (fresh and hmac.compare_digest(signature, f"v1={expected}")):
                with self.lock:
                    self.bad_signatures += 1
                return Response(status_code=401)
            event = CloudEvent.from_json(body)
            with self.lock:
                self.received.append(
                    {
                        "delivery": request.headers["Bangfu-Webhook-Id"],
                        "event": event,
                        "type": request.headers["Bangfu-Event-Type"],
                        "host": request.headers.get("host"),
                        "user_agent": request.headers.get("user-agent"),
                        "cookie": request.headers.get("cookie"),
                    }
                )
            # Some receivers set a session cookie; a delivery must not carry it back.
            return Response(status_code=204, headers={"Set-Cookie": "session=from-receiver"})

        return app

    def events(self) -> list[CloudEvent]:
        with self.lock:
            return [r["event"] for r in self.received]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    with serving(found.app()) as url:
        found.url = f"{url}/hook"
        yield found


@pytest.fixture
async def notifications_settings(
    suite: SuiteSettings,
    migrated_database: Callable[[str], Awaitable[tuple[str, str | None]]],
) -> NotificationsSettings:
    url, schema = await migrated_database("notifications")
    return NotificationsSettings(
        suite=suite,
        database_url=url,
        database_schema=schema,
        worker_poll_seconds=0.05,
        metrics_refresh_seconds=0.1,
        webhook_backoff_base_seconds=0.05,
        webhook_backoff_cap_seconds=0.2,
        webhook_timeout_seconds=2,
        sms_report_poll_seconds=0.1,
        message_backoff_base_seconds=0.05,
        message_backoff_cap_seconds=0.2,
        webhook_allowed_networks=LOOPBACK,
        # Quiet hours off unless a test sets them: the tests run at any hour.
        sms_quiet_start_hour=0,
        sms_quiet_end_hour=0,
    )


@pytest.fixture
async def notifications(
    notifications_settings: NotificationsSettings,
) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app(notifications_settings)) as client:
        yield client


@pytest.fixture
async def settings(
    suite: SuiteSettings, migrated_database: Callable[[str], Awaitable[tuple[str, str | None]]]
) -> NotificationsSettings:
    url, schema = await migrated_database("notifications")
    return NotificationsSettings(
        suite=suite,
        database_url=url,
        database_schema=schema,
        visit_reminder_days=7,
        visit_overdue_days=5,
        schedule_hour=9,
        webhook_allowed_networks=LOOPBACK,
    )


@pytest.fixture
async def db(settings: NotificationsSettings) -> AsyncIterator[Database]:
    url, schema = settings.database
    database = Database(url, schema=schema)
    yield database
    await database.dispose()


@pytest.fixture
def engine(settings: NotificationsSettings) -> service.Engine:
    return service.Engine.from_settings(settings)


Publish = Callable[..., Awaitable[CloudEvent]]


@pytest.fixture
async def publish(nats_url: str) -> AsyncIterator[Publish]:
    """Publish an event as its producing service's outbox relay would."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()

    async def send(
        service: str,
        aggregate: str,
        name: str,
        *,
        household_id: str,
        data: dict[str, Any] | None = None,
        region: str = "411302",
        sequence: int = 1,
    ) -> CloudEvent:
        event = new_event(
            service=service,
            aggregate=aggregate,
            name=name,
            subject=household_id,
            region=region,
            sequence=sequence,
            data={"household_id": household_id, **(data or {})},
        )
        await js.publish(event.nats_subject, event.to_json(), headers={"Nats-Msg-Id": event.id})
        return event

    yield send
    await nc.close()


async def eventually(check: Callable[[], Awaitable[bool] | bool], timeout: float = 15) -> None:
    """Wait until `check()` holds; fail with the timeout otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)
