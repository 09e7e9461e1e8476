"""Reading household files from the registry over REST, as the other services must.

Registry events carry ids and the names of changed fields, never values or PII; a service that
needs the values (members' circumstances, declarations, incomes, identity numbers for a
verification) reads them here, as a client of the registry like any department system.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import quote

import httpx

from shared.auth import ensure_signing_key, issue_token
from shared.regions import PROVINCE_NAMES
from shared.settings import ServiceSettings


class RegistryUnavailable(Exception):
    """The registry did not answer, or answered with a server error: try again later."""


class HouseholdNotFound(Exception):
    """No such household (or not in the caller's regions, which the registry answers alike)."""


class RegistryClient:
    """A small async client of the registry's household endpoints."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str,
        pii_token: str | None = None,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self._token = token
        self._pii_token = pii_token
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout, transport=transport)

    @classmethod
    def from_settings(
        cls, settings: ServiceSettings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> RegistryClient:
        """Configured tokens, or in development two service tokens signed with the suite key.

        Two tokens because an unmasked read is audited at the registry: a service that needs no
        identity numbers reads without `pii:read` and its reads stay masked and unaudited.
        """
        if settings.registry_token:
            token = settings.registry_token.get_secret_value()
            pii = settings.registry_pii_token
            pii_token = pii.get_secret_value() if pii else None
        elif settings.suite.env == "production":
            prefix = f"BANGFU_{settings.service.upper()}_"
            raise ValueError(f"{prefix}REGISTRY_TOKEN is required in production")
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
        if pii and not self._pii_token:
            raise PermissionError("this client has no token with pii:read")
        token = self._pii_token if pii else self._token
        try:
            response = await self._http.get(
                path,
                params=params,
                headers={"Authorization": f"Bearer {token}", **(headers or {})},
            )
        except httpx.TransportError as exc:
            raise RegistryUnavailable(f"registry unreachable: {exc!r}") from exc
        if response.status_code == 404:
            raise HouseholdNotFound(path)
        if response.status_code >= 500 or response.status_code == 429:
            raise RegistryUnavailable(f"registry answered {response.status_code} for {path}")
        response.raise_for_status()  # 401/403: a configuration error, not worth retrying
        return response.json()


def _development_token(settings: ServiceSettings, scopes: tuple[str, ...]) -> str:
    suite = settings.suite
    ensure_signing_key(suite.signing_key_file, suite.public_key_file)
    return issue_token(
        suite.signing_key_file.read_bytes(),
        client_id=f"service:{settings.service}",
        scopes=scopes,
        regions=sorted(PROVINCE_NAMES),
        issuer=suite.auth_issuer,
        audience=suite.auth_audience,
        ttl=timedelta(days=365),  # the development suite runs for as long as it runs
    )
