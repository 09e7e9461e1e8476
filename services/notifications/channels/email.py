"""Email through SMTP (the standard library's client, run off the event loop)."""

from __future__ import annotations

import asyncio
import smtplib
from email.message import EmailMessage


class MailUnavailable(Exception):
    """The SMTP server could not be reached or refused for now: try again later."""


class SmtpMailer:
    def __init__(self, host: str, port: int, *, sender: str, timeout: float = 10.0):
        self._host = host
        self._port = port
        self._sender = sender
        self._timeout = timeout

    async def send(self, *, to: str, subject: str, body: str, message_id: str) -> None:
        mail = EmailMessage()
        mail["From"] = self._sender
        mail["To"] = to
        mail["Subject"] = subject
        mail["Message-ID"] = f"<{message_id}@bangfu>"
        mail.set_content(body)
        await asyncio.to_thread(self._send, mail)

    def _send(self, mail: EmailMessage) -> None:
        try:
            with smtplib.SMTP(self._host, self._port, timeout=self._timeout) as smtp:
                smtp.send_message(mail)
        except (OSError, smtplib.SMTPException) as exc:
            raise MailUnavailable(f"SMTP {self._host}:{self._port}: {exc!r}") from exc
