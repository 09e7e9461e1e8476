"""Service-to-service access tokens from the identity provider (OAuth 2.0 client credentials).

A service that calls another (verification, benefits and notifications read the registry)
authenticates as a client of the county's identity provider: `ClientCredentials` asks the
provider's token endpoint (found through OpenID discovery) for a token, keeps it, and fetches
the next one once 80 % of its lifetime has passed, so that a call never carries a token about
to expire. Fetches are rare (one per lifetime per scope and process) and counted in
`bangfu_service_token_fetches_total{client,outcome}`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, NoReturn, TypeVar

import httpx
import structlog

from shared.observability import SERVICE_TOKEN_FETCHES

log = structlog.get_logger(__name__)

DISCOVERY_PATH = "/.well-known/openid-configuration"
# The share of a token's lifetime after which the next one is fetched.
RENEW_AT = 0.8
FETCH_OUTCOMES = ("ok", "refused", "unavailable", "rejected")
# A token is not sent once it is this close to its expiry (it could expire on the way), or
# half its time between renewal and expiry for a short-lived one.
_EXPIRY_MARGIN_SECONDS = 5.0
# After a failed renewal, while the current token is still good, wait this long to ask again.
_RETRY_SECONDS = 5.0


T = TypeVar("T")


class SingleFlight(Generic[T]):
    """Runs `fetch` once at a time: callers arriving while it runs await the same result.

    Holds no lock bound to an event loop, so an instance may outlive the loop that first used
    it (several apps, each on its own loop, share a process in the tests).
    """

    def __init__(self, fetch: Callable[[], Awaitable[T]]):
        self._fetch = fetch
        self._running: asyncio.Task[T] | None = None

    async def __call__(self) -> T:
        loop = asyncio.get_running_loop()
        running = self._running
        if running is None or running.done() or running.get_loop() is not loop:
            running = self._running = loop.create_task(self._run())
        # A caller that gives up (cancelled) must not cancel the fetch the others wait on.
        return await asyncio.shield(running)

    async def _run(self) -> T:
        return await self._fetch()


class ServiceTokenUnavailable(Exception):
    """No usable token: the identity provider cannot be reached, or it refused this client."""


async def discover(http: httpx.AsyncClient, issuer: str) -> dict[str, Any]:
    """The provider's OpenID configuration, checked to be the issuer's own (OIDC Discovery 4.3:
    the `issuer` it states must be the one it was fetched for)."""
    response = await http.get(issuer.rstrip("/") + DISCOVERY_PATH)
    response.raise_for_status()
    document = response.json()
    if not isinstance(document, dict) or document.get("issuer") != issuer:
        stated = document.get("issuer") if isinstance(document, dict) else None
        raise ValueError(f"the discovery document of {issuer} states issuer {stated!r}")
    return document


@dataclass(frozen=True)
class _Token:
    value: str
    renew_at: float  # time.monotonic() deadlines
    usable_until: float


class ClientCredentials:
    """One client's access token for one scope, fetched with client_secret_basic and renewed.

    Concurrent callers share one fetch; the instance holds no connection or lock bound to an
    event loop, so one instance may serve a whole process (see `shared_credentials`).
    """

    def __init__(
        self,
        *,
        issuer: str,
        client_id: str,
        client_secret: str,
        scope: str,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self.issuer = issuer
        self.client_id = client_id
        self.scope = scope
        self._secret = client_secret
        self._timeout = timeout
        self._transport = transport
        self._token_endpoint: str | None = None
        self._token: _Token | None = None
        self._not_before = 0.0  # no new attempt before this, while the current token is good
        self._shared_fetch = SingleFlight(self._fetch)
        for outcome in FETCH_OUTCOMES:  # the series are there at 0 from the start
            SERVICE_TOKEN_FETCHES.labels(client=client_id, outcome=outcome)

    async def token(self) -> str:
        """A token good for at least a few seconds more; fetched when none is, or renewed
        after 80 % of its lifetime. Raises ServiceTokenUnavailable when there is none."""
        now = time.monotonic()
        current = self._token
        if current is not None and now < current.renew_at:
            return current.value
        usable = current is not None and now < current.usable_until
        if current is not None and usable and now < self._not_before:
            return current.value  # the last renewal failed moments ago: keep the one we have
        try:
            return (await self._shared_fetch()).value
        except ServiceTokenUnavailable:
            if current is not None and usable:
                self._not_before = time.monotonic() + _RETRY_SECONDS
                return current.value  # the provider is down: the current token still works
            raise

    def invalidate(self, token: str | None = None) -> None:
        """Drop the current token (the called service refused it), so the next `token()`
        fetches another; given the refused `token`, only if it is still the current one, so
        that callers refused together cause one fetch, not one each."""
        if self._token is not None and (token is None or token == self._token.value):
            self._token = None
            self._not_before = 0.0

    async def _fetch(self) -> _Token:
        started = time.monotonic()
        try:
            async with httpx.AsyncClient(timeout=self._timeout, transport=self._transport) as http:
                if self._token_endpoint is None:
                    self._token_endpoint = str(
                        (await discover(http, self.issuer))["token_endpoint"]
                    )
                response = await http.post(
                    self._token_endpoint,
                    data={"grant_type": "client_credentials", "scope": self.scope},
                    auth=(self.client_id, self._secret),
                )
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            self._failed("unavailable", f"identity provider unreachable: {exc!r}")
        if response.status_code >= 500:
            self._failed("unavailable", f"token endpoint answered {response.status_code}")
        if response.status_code != 200:
            self._failed(
                "refused", f"token endpoint answered {response.status_code}: {response.text[:200]}"
            )
        body = response.json()
        value, lifetime = body.get("access_token"), body.get("expires_in")
        if not isinstance(value, str) or not isinstance(lifetime, int | float) or lifetime <= 0:
            self._failed("refused", "token endpoint answered without a token or its lifetime")
        margin = min(_EXPIRY_MARGIN_SECONDS, (1 - RENEW_AT) * lifetime / 2)
        token = _Token(
            value=value,
            renew_at=started + RENEW_AT * lifetime,
            usable_until=started + lifetime - margin,
        )
        self._token = token
        SERVICE_TOKEN_FETCHES.labels(client=self.client_id, outcome="ok").inc()
        log.info(
            "service_token.fetched",
            client_id=self.client_id,
            scope=self.scope,
            expires_in=lifetime,
            renew_in=round(RENEW_AT * lifetime, 1),
        )
        return token

    def _failed(self, outcome: str, reason: str) -> NoReturn:
        SERVICE_TOKEN_FETCHES.labels(client=self.client_id, outcome=outcome).inc()
        log.warning(
            "service_token.fetch_failed",
            client_id=self.client_id,
            scope=self.scope,
            outcome=outcome,
            reason=reason,
        )
        raise ServiceTokenUnavailable(f"no token for client {self.client_id}: {reason}")

    def rejected(self, token: str, *, by: str) -> None:
        """Record that `by` refused a token fresh from the provider (after a renewal): a
        configuration error (the client's scopes, the audience), not one to retry."""
        SERVICE_TOKEN_FETCHES.labels(client=self.client_id, outcome="rejected").inc()
        log.error(
            "service_token.rejected",
            client_id=self.client_id,
            scope=self.scope,
            refused_by=by,
        )
        self.invalidate(token)


_shared: dict[tuple[str, str, str, str], ClientCredentials] = {}


def shared_credentials(
    *, issuer: str, client_id: str, client_secret: str, scope: str
) -> ClientCredentials:
    """One ClientCredentials per issuer, client and scope in this process: a service that makes
    a registry client per message still fetches one token per lifetime, not one per message."""
    key = (issuer, client_id, client_secret, scope)
    credentials = _shared.get(key)
    if credentials is None:
        credentials = _shared[key] = ClientCredentials(
            issuer=issuer, client_id=client_id, client_secret=client_secret, scope=scope
        )
    return credentials
