"""Helpers for the DCI tests: signed envelopes, a callback receiver, a registry with DCI keys."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from services.registry.dci.signing import Signer
from services.registry.settings import RegistrySettings
from shared.events.envelope import new_event_id
from tests.conftest import serving

SENDER = "spmis-test"
CLIENT_KEY = Ed25519PrivateKey.generate()
CLIENT = Signer(CLIENT_KEY, SENDER)


def settings_for_dci(settings: RegistrySettings, **overrides: Any) -> RegistrySettings:
    """The test registry with the test sender's key registered and loopback callbacks allowed."""
    public = CLIENT_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return settings.model_copy(
        update={
            "dci_trusted_senders": {SENDER: public.decode()},
            "dci_callback_allowed_networks": [ipaddress.ip_network("127.0.0.0/8")],
            "dci_delivery_poll_seconds": 0.1,
            "dci_delivery_backoff_base_seconds": 0.1,
            **overrides,
        }
    )


def envelope(
    action: str, message: dict[str, Any], *, sender_uri: str | None = None, sign: bool = True
) -> dict[str, Any]:
    header: dict[str, Any] = {
        "version": "1.0.0",
        "message_id": new_event_id(),
        "message_ts": datetime.now(UTC).isoformat(),
        "action": action,
        "sender_id": SENDER,
        "receiver_id": "bangfu-registry",
        "total_count": 1,
    }
    if sender_uri is not None:
        header["sender_uri"] = sender_uri
    body: dict[str, Any] = {"header": header, "message": message}
    if sign:
        body["signature"] = CLIENT.sign(header, message)
    return body


def search(query_type: str, query: Any, **criteria: Any) -> dict[str, Any]:
    return {
        "transaction_id": new_event_id(),
        "search_request": [
            {
                "reference_id": new_event_id(),
                "timestamp": datetime.now(UTC).isoformat(),
                "search_criteria": {"query_type": query_type, "query": query, **criteria},
            }
        ],
    }


def subscribe(event_type: str, filter_: Any) -> dict[str, Any]:
    return {
        "transaction_id": new_event_id(),
        "subscribe_request": [
            {
                "reference_id": new_event_id(),
                "timestamp": datetime.now(UTC).isoformat(),
                "subscribe_criteria": {
                    "reg_event_type": event_type,
                    "filter": filter_,
                    "notify_record_type": "Group",
                },
            }
        ],
    }


class Receiver:
    """An SPMIS's callback endpoints over real HTTP: what arrives, by path."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.refuse = 0  # answer 503 to this many calls first
        self.app = FastAPI()

        @self.app.post("/{path:path}")
        async def take(path: str, request: Request) -> JSONResponse:
            if self.refuse > 0:
                self.refuse -= 1
                return JSONResponse({"error": "busy"}, status_code=503)
            self.received.append((f"/{path}", await request.json()))
            return JSONResponse({"status": "ok"})

    def of(self, action: str) -> list[dict[str, Any]]:
        return [body for _, body in self.received if body["header"]["action"] == action]

    async def wait_for(
        self, action: str, count: int = 1, timeout: float = 20
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.of(action)) < count:
            assert time.monotonic() < deadline, f"{count} {action} not received: {self.received}"
            await asyncio.sleep(0.05)
        return self.of(action)


@contextmanager
def receiving() -> Iterator[tuple[Receiver, str]]:
    receiver = Receiver()
    with serving(receiver.app) as url:
        yield receiver, url
