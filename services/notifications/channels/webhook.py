"""The HTTP client webhook deliveries go out through: it connects only where the policy allows.

Each new connection resolves the URL's name, checks every address it resolves to, and connects
to a checked address itself, so a name that resolves elsewhere a moment later (DNS rebinding)
cannot steer the connection. TLS still names the URL's host (SNI, certificate check) and so
does the `Host` header: only the address lookup is taken out of the connection's hands.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable

import anyio
import httpcore
import httpx

from services.notifications.domain.destinations import (
    Address,
    DestinationPolicy,
    DestinationRefused,
    literal_address,
)


class _CheckedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, behind the destination policy."""

    def __init__(self, policy: DestinationPolicy):
        self._policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self._policy.check_port(port)
        addresses = await _resolve(host, port, timeout=timeout)
        self._policy.check_resolved(host, addresses)
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # check_resolved refused an empty list
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise DestinationRefused("a Unix socket is not a webhook destination")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


async def _resolve(host: str, port: int, *, timeout: float | None) -> list[Address]:
    """Every address the host names; none when it does not resolve (refused like a private one)."""
    literal = literal_address(host)
    if literal is not None:
        return [literal]
    try:
        with anyio.fail_after(timeout):
            found = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError):
        return []
    addresses: list[Address] = []
    for *_, sockaddr in found:
        address = literal_address(str(sockaddr[0]))
        if address is not None and address not in addresses:
            addresses.append(address)
    return addresses


class WebhookClients:
    """An httpx client per destination origin (scheme, host, port), each a pool behind the policy.

    One pool for every destination scanned all its connections, with a readability check of
    each idle one, for every request it placed: with 50 receivers that was 41 % of the worker's
    CPU (py-spy, bench/notifications.py). A pool per origin holds only that origin's few.
    """

    def __init__(self, policy: DestinationPolicy, *, timeout: float, concurrency: int):
        # SSL_CERT_FILE / SSL_CERT_DIR may name a private CA of internal department systems.
        self._tls = httpx.create_ssl_context(trust_env=True)  # made once: a few ms each
        self._backend = _CheckedBackend(policy)
        self._timeout = timeout
        self._concurrency = concurrency
        self._clients: dict[tuple[str, str, int | None], httpx.AsyncClient] = {}

    def for_url(self, url: str) -> httpx.AsyncClient:
        """The client of the URL's origin; no proxy from the environment (a proxy would
        resolve the name itself), no redirects (httpx follows none unless told)."""
        parsed = httpx.URL(url)
        origin = (parsed.scheme, parsed.host, parsed.port)
        client = self._clients.get(origin)
        if client is None:
            transport = httpx.AsyncHTTPTransport(verify=self._tls, trust_env=False)
            # httpx does not take a network backend: its pool is rebuilt with its defaults
            # and ours.
            transport._pool = httpcore.AsyncConnectionPool(
                ssl_context=self._tls,
                max_connections=self._concurrency,
                max_keepalive_connections=self._concurrency,
                keepalive_expiry=5.0,
                network_backend=self._backend,
            )
            client = httpx.AsyncClient(transport=transport, timeout=self._timeout, trust_env=False)
            self._clients[origin] = client
        return client

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
