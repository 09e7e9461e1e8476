"""Reading household files from the registry over REST, as the other services must.

Registry events carry ids and the names of changed fields, never values or PII; a service that
needs the values (members' circumstances, declarations, incomes, identity numbers for a
verification) reads them here, as a client of the registry like any department system.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import httpx

from shared.auth import ensure_signing_key, issue_token
from shared.events.consumer import TryLater
from shared.regions import FILING_PROVINCES
from shared.settings import ServiceSettings, is_url
from shared.tokens import ClientCredentials, ServiceTokenUnavailable, shared_credentials

READ_SCOPE = "registry:read"
PII_SCOPE = "registry:read pii:read"
# The most ids `POST /v1/households:batch-get` takes (422 above): a consumer's fetch of events
# fits in one call, a whole region does not.
BATCH_READ_MAX = 100
# Answers that say the registry is not there for now (busy, a proxy without it, its database
# away): tried again later, however long that lasts.
AWAY_STATUSES = frozenset({429, 502, 503, 504})
# The parts of a household file that other services' results fill (the 核对 summary, the
# entitlements, exit eligibility), never people's edits: a `household.changed` naming only
# these changed nothing of the household's circumstances.
ATTACHED_RESULTS = frozenset({"verification", "entitlements", "exit_eligibility"})


class RegistryUnavailable(Exception):
    """The registry did not answer, or answered with a server error: try again later."""


class RegistryAway(RegistryUnavailable, TryLater):
    """The registry is not there for now (unreachable, busy, its database away, or no token to
    call it): an event's handler waits it out rather than dead-letter the event. A 500 is
    not this: it may be the event's own data, and counts toward the dead letter."""


class HouseholdNotFound(Exception):
    """No such household (or not in the caller's regions, which the registry answers alike)."""


class RegistryRefusedToken(Exception):
    """The registry refused a token fresh from the identity provider: this service's client is
    misconfigured there (scopes, audience, regions), which no retry mends."""


@dataclass(frozen=True)
class Households:
    """Files by household id, and (when asked for) their declared items by household id."""

    files: dict[str, dict[str, Any]]
    declarations: dict[str, list[dict[str, Any]]]


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    headers: dict[str, str]
    params: dict[str, str | int] | None
    json: Any


class RegistryClient:
    """A small async client of the registry's household endpoints.

    Its tokens come from `ClientCredentials` (renewed before they expire; one refused with 401
    is fetched again once and the call repeated), or are given as strings (development).
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | ClientCredentials,
        pii_token: str | ClientCredentials | None = None,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self._token = token
        self._pii_token = pii_token
        self._http = httpx.AsyncClient(
            base_url=base_url, timeout=timeout, transport=transport, verify=_tls_context()
        )

    @classmethod
    def from_settings(
        cls, settings: ServiceSettings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> RegistryClient:
        """Tokens from the identity provider with the service's client credentials, or without a
        provider two service tokens signed with the development key.

        Two tokens because an unmasked read is audited at the registry: a service that needs no
        identity numbers reads without `pii:read` and its reads stay masked and unaudited.
        """
        suite = settings.suite
        token: str | ClientCredentials
        pii_token: str | ClientCredentials
        if settings.client_id and settings.client_secret and is_url(suite.auth_issuer):
            secret = settings.client_secret.get_secret_value()
            token, pii_token = (
                shared_credentials(
                    issuer=suite.auth_issuer,
                    client_id=settings.client_id,
                    client_secret=secret,
                    scope=scope,
                )
                for scope in (READ_SCOPE, PII_SCOPE)
            )
        elif suite.uses_identity_provider:
            # The settings refuse this on construction; here for settings built without checks.
            prefix = f"BANGFU_{settings.service.upper()}_"
            raise ValueError(
                f"{prefix}CLIENT_ID and {prefix}CLIENT_SECRET, and BANGFU_AUTH_ISSUER as the "
                "identity provider's URL, are required to call the registry with its tokens"
            )
        else:
            token = _development_token(settings, ("registry:read",))
            pii_token = _development_token(settings, ("registry:read", "pii:read"))
        return cls(settings.registry_url, token=token, pii_token=pii_token, transport=transport)

    async def household(
        self, household_id: str, *, pii: bool = False, purpose: str | None = None
    ) -> dict[str, Any]:
        """The file as `GET /v1/households/{id}` answers it; `pii` asks for identity numbers
        and birth dates in clear, which the registry audits with the `purpose` it must be given.
        """
        if pii and not purpose:
            raise ValueError("a read with pii:read needs a purpose (the Bangfu-Purpose header)")
        headers = {"Bangfu-Purpose": quote(purpose)} if purpose else {}
        body = await self._get(f"/v1/households/{quote(household_id)}", pii=pii, headers=headers)
        assert isinstance(body, dict)
        return body

    async def households(
        self,
        household_ids: Sequence[str],
        *,
        pii: bool = False,
        purpose: str | None = None,
        declarations: bool = False,
    ) -> Households:
        """Many files as `household` answers each, in calls of at most `BATCH_READ_MAX` ids
        (`POST /v1/households:batch-get`); with `declarations`, each one's declared items too.
        An id missing or outside this client's regions is simply not in the answer."""
        if pii and not purpose:
            raise ValueError("a read with pii:read needs a purpose (the Bangfu-Purpose header)")
        headers = {"Bangfu-Purpose": quote(purpose)} if purpose else {}
        wanted = list(dict.fromkeys(household_ids))
        found = Households(files={}, declarations={})
        for start in range(0, len(wanted), BATCH_READ_MAX):
            body = {
                "ids": wanted[start : start + BATCH_READ_MAX],
                "include": ["declarations"] if declarations else [],
            }
            page = await self._call(
                "POST", "/v1/households:batch-get", pii=pii, headers=headers, json=body
            )
            found.files.update((file["id"], file) for file in page["items"])
            found.declarations.update(page["declarations"] or {})
        return found

    async def household_ids(self, *, region: str, status: str | None = None) -> list[str]:
        """The ids of every household under a region prefix (optionally in one status)."""
        ids: list[str] = []
        params: dict[str, str | int] = {"region": region, "limit": 200}
        if status:
            params["status"] = status
        while True:
            page = await self._get("/v1/households", params=params)
            ids += [item["id"] for item in page["items"]]
            if not page["next_cursor"]:
                return ids
            params["cursor"] = page["next_cursor"]

    async def declarations(self, household_id: str) -> list[dict[str, Any]]:
        """Declared income and asset items (申报), newest declaration's items."""
        body = await self._get(f"/v1/households/{quote(household_id)}/declarations")
        assert isinstance(body, list)
        return body

    async def incomes(self, household_id: str) -> list[dict[str, Any]]:
        """Monthly household incomes recorded after enrolment, oldest first."""
        body = await self._get(f"/v1/households/{quote(household_id)}/incomes")
        assert isinstance(body, list)
        return body

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _get(
        self,
        path: str,
        *,
        pii: bool = False,
        headers: dict[str, str] | None = None,
        params: dict[str, str | int] | None = None,
    ) -> Any:
        return await self._call("GET", path, pii=pii, headers=headers, params=params)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        pii: bool = False,
        headers: dict[str, str] | None = None,
        params: dict[str, str | int] | None = None,
        json: Any = None,
    ) -> Any:
        source = self._pii_token if pii else self._token
        if source is None:
            raise PermissionError("this client has no token with pii:read")
        request = _Request(method, path, headers or {}, params, json)
        response = await self._send(request, source)
        if response.status_code == 401 and isinstance(source, ClientCredentials):
            # Expired early, or signed by a key the registry no longer trusts: one new token.
            refused = _bearer_of(response.request)
            source.invalidate(refused)
            response = await self._send(request, source)
            if response.status_code == 401:
                source.rejected(_bearer_of(response.request), by="registry")
                raise RegistryRefusedToken(
                    f"the registry refused a fresh token of client {source.client_id} "
                    f"({source.scope}) for {path}: {response.text[:200]}"
                )
        if response.status_code == 404:
            raise HouseholdNotFound(path)
        if response.status_code in AWAY_STATUSES:
            raise RegistryAway(f"registry answered {response.status_code} for {path}")
        if response.status_code >= 500:
            raise RegistryUnavailable(f"registry answered {response.status_code} for {path}")
        response.raise_for_status()  # 401/403: a configuration error, not worth retrying
        return response.json()

    async def _send(self, request: _Request, source: str | ClientCredentials) -> httpx.Response:
        try:
            token = source if isinstance(source, str) else await source.token()
        except ServiceTokenUnavailable as exc:
            raise RegistryAway(f"no token to call the registry: {exc}") from exc
        try:
            return await self._http.request(
                request.method,
                request.path,
                params=request.params,
                json=request.json,
                headers={"Authorization": f"Bearer {token}", **request.headers},
            )
        except httpx.TransportError as exc:
            raise RegistryAway(f"registry unreachable: {exc!r}") from exc


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx's default verifying context, made once: loading the CA bundle took ~20 ms, which
    a client made per batch of events paid each time."""
    return httpx.create_ssl_context()


def _bearer_of(request: httpx.Request) -> str:
    return request.headers["Authorization"].removeprefix("Bearer ")


def _development_token(settings: ServiceSettings, scopes: tuple[str, ...]) -> str:
    suite = settings.suite
    ensure_signing_key(suite.signing_key_file, suite.public_key_file)
    return issue_token(
        suite.signing_key_file.read_bytes(),
        client_id=f"service:{settings.service}",
        scopes=scopes,
        regions=sorted(FILING_PROVINCES),
        issuer=suite.auth_issuer,
        audience=suite.auth_audience,
        ttl=timedelta(days=365),  # the development suite runs for as long as it runs
    )
