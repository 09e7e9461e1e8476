"""The HTTP transport on real sockets: the environment's proxy, and what a failure maps to."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from sandbox.app import create_app
from sandbox.settings import SandboxSettings
from services.verification.adapters.transport import (
    HASH_HEADER,
    HttpTransport,
    Query,
    Refused,
    Unavailable,
)
from shared.natsserver import free_port
from tests.conftest import serving
from tests.helpers import identity_number

QUERY = Query("tax", identity_number(serial=11), consent_id="c-1", purpose="核对")


class Proxy:
    """A forward proxy that answers every request itself with `status`, noting its first
    line: enough to see where the transport sent a query."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.request_lines: list[str] = []

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        self.request_lines.append(lines[0])
        length = next(
            int(line.split(":", 1)[1])
            for line in lines
            if line.lower().startswith("content-length")
        )
        await reader.readexactly(length)
        body = json.dumps({"via": "proxy"}).encode()
        writer.write(
            f"HTTP/1.1 {self.status} X\r\nContent-Type: application/json\r\n"
            f"{HASH_HEADER}: {QUERY.request_hash}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with HttpTransport.session(connections=2) as session:
        yield session


@contextlib.asynccontextmanager
async def proxied(proxy: Proxy, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    """The proxy on a free port, named by `HTTP_PROXY` (and no `NO_PROXY`)."""
    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with server:
        yield f"http://127.0.0.1:{port}"


class TestProxy:
    async def test_a_department_is_asked_through_the_environments_proxy(
        self, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        proxy = Proxy()
        async with proxied(proxy, monkeypatch):
            transport = HttpTransport(session, "http://tax.department.example:8080")
            answer = await transport.send(QUERY, timeout=5)
        assert proxy.request_lines == [
            "POST http://tax.department.example:8080/departments/tax/query HTTP/1.1"
        ]
        assert answer.body == {"via": "proxy"}
        assert answer.echoed_hash == QUERY.request_hash

    async def test_no_proxy_sends_a_department_straight_to_it(
        self, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        proxy = Proxy()
        async with proxied(proxy, monkeypatch):
            monkeypatch.setenv("NO_PROXY", "127.0.0.1")
            with serving(create_app(SandboxSettings(nats_url=""))) as url:
                transport = HttpTransport(session, url)
                answer = await transport.send(QUERY, timeout=5)
        assert proxy.request_lines == []
        assert answer.echoed_hash == QUERY.request_hash
        assert answer.body != {"via": "proxy"}


class TestFailures:
    @pytest.mark.parametrize(("status", "error"), [(503, Unavailable), (404, Refused)])
    async def test_an_error_status_maps_to_whether_a_retry_can_help(
        self,
        session: aiohttp.ClientSession,
        monkeypatch: pytest.MonkeyPatch,
        status: int,
        error: type[Exception],
    ) -> None:
        # The proxy stands in for a department answering with this status.
        async with proxied(Proxy(status), monkeypatch):
            transport = HttpTransport(session, "http://tax.department.example")
            with pytest.raises(error, match=f"HTTP {status}"):
                await transport.send(QUERY, timeout=5)

    async def test_a_department_nobody_listens_for_is_unavailable(
        self, session: aiohttp.ClientSession
    ) -> None:
        transport = HttpTransport(session, f"http://127.0.0.1:{free_port()}")
        with pytest.raises(Unavailable, match="cannot reach the department"):
            await transport.send(QUERY, timeout=5)
