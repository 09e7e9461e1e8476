"""The HTTP client webhook deliveries go out through: it connects only where the policy allows.

Each new connection resolves the URL's name, checks every address it resolves to, and connects
to a checked address itself, so a name that resolves elsewhere a moment later (DNS rebinding)
cannot steer the connection. TLS still names the URL's host (SNI, certificate check) and so
does the `Host` header: only the address lookup is taken out of the connection's hands.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Sequence
from typing import NamedTuple

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


# What a failed post raises besides `DestinationRefused`: the attempt's error, never the batch's.
POST_ERRORS = (
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
)
USER_AGENT = b"Bangfu-Webhooks/1"
# Only the status counts; past this, an answer's body is left unread. An endless body, each
# chunk within the read timeout, would otherwise hold a delivery slot for ever.
ANSWER_READ_BYTES = 64 * 1024


class _Target(NamedTuple):
    pool: httpcore.AsyncConnectionPool
    url: httpcore.URL
    host: bytes


class WebhookPools:
    """A connection pool per destination origin (scheme, host, port), each behind the policy.

    One pool for every destination scanned all its connections, with a readability check of
    each idle one, for every request it placed: with 50 receivers that was 41 % of the worker's
    CPU (py-spy, bench/notifications.py). A pool per origin holds only that origin's few.

    A delivery is one POST with our headers, so it goes to httpcore, httpx's transport, rather
    than through an `httpx.AsyncClient`: the client's layers (URL and header merging, cookies,
    auth and redirect flows) were a third of a post's CPU, and a webhook wants none of them:
    no redirect is followed, and no receiver's cookie is kept to be sent back to it.
    """

    def __init__(self, policy: DestinationPolicy, *, timeout: float, concurrency: int):
        # SSL_CERT_FILE / SSL_CERT_DIR may name a private CA of internal department systems.
        self._tls = httpx.create_ssl_context(trust_env=True)  # made once: a few ms each
        self._policy = policy
        self._backend = _CheckedBackend(policy)
        self._concurrency = concurrency
        self._extensions = {"timeout": httpx.Timeout(timeout).as_dict()}  # as httpx's transport
        self._pools: dict[tuple[bytes, bytes, int | None], httpcore.AsyncConnectionPool] = {}
        self._targets: dict[str, _Target] = {}

    def target(self, url: str) -> _Target:
        """The pool of the URL's origin, the URL as httpcore takes it, its `Host`. The URL's form is
        checked the first time it is seen (the policy is fixed while the worker runs); its
        addresses at every connection. No proxy from the environment: a proxy would resolve
        the name itself."""
        found = self._targets.get(url)
        if found is None:
            try:
                self._policy.check_url(url)
                parsed = httpx.URL(url)  # its host IDNA-encoded, as httpx sends it
            except DestinationRefused:
                raise
            except (ValueError, httpx.InvalidURL) as exc:  # one stored before today's checks
                raise DestinationRefused(f"the URL is not valid: {exc}") from exc
            origin = (parsed.raw_scheme, parsed.raw_host, parsed.port)
            pool = self._pools.get(origin)
            if pool is None:
                pool = httpcore.AsyncConnectionPool(
                    ssl_context=self._tls,
                    max_connections=self._concurrency,
                    max_keepalive_connections=self._concurrency,
                    keepalive_expiry=5.0,
                    network_backend=self._backend,
                )
                self._pools[origin] = pool
            found = self._targets[url] = _Target(
                pool,
                httpcore.URL(
                    scheme=parsed.raw_scheme,
                    host=parsed.raw_host,
                    port=parsed.port,
                    target=parsed.raw_path,
                ),
                parsed.netloc,  # an IPv6 address in brackets, a port other than the default
            )
        return found

    async def post(self, url: str, body: bytes, headers: Sequence[tuple[str, str]]) -> int:
        """POST the body with these headers (and `Host`, `Content-Length`, `User-Agent`); the
        answer's status code once its body is read (up to `ANSWER_READ_BYTES`). Raises
        `DestinationRefused` or one of `POST_ERRORS`."""
        target = self.target(url)
        sent: list[tuple[bytes | str, bytes | str]] = [
            (b"Host", target.host),
            (b"User-Agent", USER_AGENT),
            *headers,
        ]
        async with target.pool.stream(
            b"POST", target.url, headers=sent, content=body, extensions=self._extensions
        ) as response:
            read = 0
            async for chunk in response.aiter_stream():
                read += len(chunk)
                if read > ANSWER_READ_BYTES:
                    break  # its connection is closed rather than kept
            return response.status

    async def aclose(self) -> None:
        for pool in self._pools.values():
            await pool.aclose()
        self._pools.clear()
        self._targets.clear()
