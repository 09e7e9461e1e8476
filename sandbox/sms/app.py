"""The SMS gateway sandbox's HTTP API: `uvicorn sandbox.sms.app:create_app --factory`.

`POST /v1/messages` accepts a message (202) and `GET /v1/messages/{id}` reports it: `accepted`,
then `delivered` after a settable delay, or `failed` with the operator's reason for a number
in `unreachable_prefixes`. Nothing is sent anywhere; messages are kept in memory.

The same process runs the embedded default's mail server (aiosmtpd on `smtp_port`), whose
mail `GET /v1/mails` lists, so that a demo shows what the county office was emailed.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email import message_from_bytes, policy
from typing import Annotated, Any

from aiosmtpd.controller import Controller
from fastapi import FastAPI, Header, HTTPException, Query
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PORT = 8191
DEFAULT_SMTP_PORT = 8125


class SmsSandboxSettings(BaseSettings):
    """Where the sandbox listens and how its pretend operator behaves."""

    model_config = SettingsConfigDict(env_prefix="BANGFU_SMS_SANDBOX_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    # Set: every call must carry `Authorization: Bearer <api_key>`.
    api_key: str | None = None
    delivery_delay_ms: int = 200
    # Numbers starting with one of these fail as an unreachable subscriber.
    unreachable_prefixes: list[str] = ["1990000"]
    # The local mail server's port; 0 runs none.
    smtp_port: int = DEFAULT_SMTP_PORT


class Mailbox:
    """An aiosmtpd handler that keeps every mail it accepts."""

    def __init__(self) -> None:
        self.mails: list[dict[str, Any]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        mail = message_from_bytes(envelope.content, policy=policy.default)
        body = mail.get_body(preferencelist=("plain",))
        self.mails.append(
            {
                "from": envelope.mail_from,
                "to": list(envelope.rcpt_tos),
                "subject": str(mail["Subject"] or ""),
                "body": body.get_content().replace("\r\n", "\n") if body is not None else "",
            }
        )
        return "250 OK"


class SendIn(BaseModel):
    to: str = Field(pattern=r"^1[3-9]\d{9}$", description="a mainland mobile number")
    text: str = Field(min_length=1, max_length=500)
    ref: str | None = Field(None, max_length=100, description="the sender's own reference")


@dataclass
class Sms:
    id: str
    to: str
    text: str
    ref: str | None
    accepted_at: float
    fails: bool

    def view(self, *, now: float, delay: float) -> dict[str, Any]:
        """Its state now: the operator takes `delay` seconds to deliver or fail it."""
        done = now >= self.accepted_at + delay
        status = "accepted" if not done else ("failed" if self.fails else "delivered")
        return {
            "id": self.id,
            "to": self.to,
            "text": self.text,
            "ref": self.ref,
            "status": status,
            "reason": "unreachable subscriber" if done and self.fails else None,
            "segments": max(1, -(-len(self.text) // 70)),
        }


def create_app(settings: SmsSandboxSettings | None = None) -> FastAPI:
    settings = settings or SmsSandboxSettings()
    mailbox = Mailbox()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not settings.smtp_port:
            yield
            return
        smtp = Controller(mailbox, hostname=settings.host, port=settings.smtp_port)
        smtp.start()
        try:
            yield
        finally:
            smtp.stop()

    app = FastAPI(title="Bangfu SMS gateway sandbox", version="1.0.0", lifespan=lifespan)
    messages: dict[str, Sms] = {}
    ids = itertools.count(1)
    delay = settings.delivery_delay_ms / 1000

    def check(authorization: str | None) -> None:
        if settings.api_key and authorization != f"Bearer {settings.api_key}":
            raise HTTPException(401, "a valid API key is required")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/messages", status_code=202)
    async def send(
        body: SendIn, authorization: Annotated[str | None, Header()] = None
    ) -> dict[str, Any]:
        check(authorization)
        sms = Sms(
            id=f"sms-{next(ids):08d}",
            to=body.to,
            text=body.text,
            ref=body.ref,
            accepted_at=time.monotonic(),
            fails=body.to.startswith(tuple(settings.unreachable_prefixes)),
        )
        messages[sms.id] = sms
        return sms.view(now=sms.accepted_at, delay=delay)

    @app.get("/v1/messages/{message_id}")
    async def report(
        message_id: str, authorization: Annotated[str | None, Header()] = None
    ) -> dict[str, Any]:
        check(authorization)
        sms = messages.get(message_id)
        if sms is None:
            raise HTTPException(404, f"no message {message_id}")
        return sms.view(now=time.monotonic(), delay=delay)

    @app.get("/v1/messages")
    async def sent(
        to: Annotated[str | None, Query()] = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> list[dict[str, Any]]:
        """Everything accepted so far (for tests and demos), oldest first."""
        check(authorization)
        now = time.monotonic()
        return [s.view(now=now, delay=delay) for s in messages.values() if to in (None, s.to)]

    @app.get("/v1/mails")
    async def mails() -> list[dict[str, Any]]:
        """Every mail the local SMTP server accepted, oldest first."""
        return mailbox.mails

    return app
