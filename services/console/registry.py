"""The suite's REST APIs (registry, verification), called with the signed-in person's token.

The console holds no household data: every page is the services' answer of the moment. An
error answer becomes `ApiError` carrying the problem said in Chinese (labels.problem); the
service's own words and any stack trace stay in the log.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import structlog

from services.console import labels
from shared.auth import PURPOSE_HEADER

log = structlog.get_logger(__name__)

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class ApiError(Exception):
    """A service refused, or could not be reached; `said` is for the person."""

    def __init__(self, status: int, said: labels.Said, body: Mapping[str, Any] | None = None):
        super().__init__(said.message)
        self.status = status
        self.said = said
        self.body = body or {}


@dataclass(frozen=True)
class File:
    """A household's file and the ETag that guards edits to it."""

    body: dict[str, Any]
    version: str  # the ETag's value, without quotes: what the step form sends back


def _version(etag: str | None) -> str:
    return (etag or "").strip().removeprefix("W/").strip('"')


class Api:
    """One service's API: its base URL, and `_call` that turns refusals into ApiError."""

    def __init__(self, http: httpx.AsyncClient, base_url: str):
        self._http = http
        self._base = base_url.rstrip("/")

    async def _call(
        self,
        method: str,
        path: str,
        token: str,
        *,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        try:
            response = await self._http.request(
                method,
                self._base + path,
                headers={"Authorization": f"Bearer {token}", **(headers or {})},
                **kwargs,
            )
        except httpx.HTTPError as exc:
            log.warning("console.service_unreachable", url=self._base, path=path, error=repr(exc))
            raise ApiError(503, labels.unavailable()) from exc
        if response.is_success:
            return response
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = None
        log.info(
            "console.service_refused",
            url=self._base,
            path=path,
            status=response.status_code,
            type=(body or {}).get("type"),
        )
        raise ApiError(response.status_code, labels.problem(response.status_code, body), body)


class Registry(Api):
    async def household(self, token: str, household_id: str) -> File:
        response = await self._call("GET", f"/v1/households/{household_id}", token)
        return File(response.json(), _version(response.headers.get("ETag")))

    async def household_in_clear(self, token: str, household_id: str, *, purpose: str) -> File:
        """The file with numbers in clear (a `pii:read` token): the registry records the read
        with its purpose in its audit log."""
        response = await self._call(
            "GET",
            f"/v1/households/{household_id}",
            token,
            headers={PURPOSE_HEADER: quote(purpose, safe="")},
        )
        return File(response.json(), _version(response.headers.get("ETag")))

    async def history(self, token: str, household_id: str) -> list[dict[str, Any]]:
        response = await self._call("GET", f"/v1/households/{household_id}/history", token)
        items: list[dict[str, Any]] = response.json()
        return items

    async def households(self, token: str, **filters: str) -> dict[str, Any]:
        response = await self._call("GET", "/v1/households", token, params=filters)
        page: dict[str, Any] = response.json()
        return page

    async def search(
        self, token: str, *, identity_number: str | None = None, name: str | None = None
    ) -> dict[str, Any]:
        """Households with a member of this number or name (the number in the body only)."""
        body = {"identity_number": identity_number} if identity_number else {"name": name}
        response = await self._call("POST", "/v1/households:search", token, json=body)
        page: dict[str, Any] = response.json()
        return page

    async def read_many(self, token: str, household_ids: list[str]) -> list[dict[str, Any]]:
        """Files (masked) of up to BATCH_READ_MAX households in one call, those found."""
        response = await self._call(
            "POST", "/v1/households:batch-get", token, json={"ids": household_ids}
        )
        files: list[dict[str, Any]] = response.json()["items"]
        return files

    async def statistics(self, token: str) -> dict[str, Any]:
        response = await self._call("GET", "/v1/statistics", token)
        counts: dict[str, Any] = response.json()
        return counts

    async def statistics_of(self, token: str, *, year: int) -> dict[str, Any]:
        """Counts, the year's exits against its target and overdue visits (the dashboard's)."""
        response = await self._call("GET", "/v1/statistics", token, params={"year": str(year)})
        counts: dict[str, Any] = response.json()
        return counts

    async def count(self, token: str, **filters: str) -> int:
        """How many households match the list filters (the list's total)."""
        page = await self.households(token, limit="1", count="true", **filters)
        return int(page["total"])

    async def set_target(self, token: str, region: str, year: int, share_percent: int) -> None:
        await self._call(
            "PUT", f"/v1/targets/{region}/{year}", token, json={"share_percent": share_percent}
        )

    async def notice(self, token: str, region: str) -> dict[str, Any]:
        """The region's public notice (公示): masked names and numbers, with its total."""
        response = await self._call("GET", f"/v1/notices/{region}", token)
        notice: dict[str, Any] = response.json()
        return notice

    async def _edit(self, method: str, path: str, token: str, version: str, **sent: Any) -> File:
        """A change to a file with the version the person's page was read at (If-Match): a
        file changed in between is refused (412), never overwritten."""
        response = await self._call(
            method, path, token, headers={"If-Match": f'"{version}"'}, **sent
        )
        return File(response.json(), _version(response.headers.get("ETag")))

    async def file(self, token: str, body: dict[str, Any], *, idempotency_key: str) -> File:
        response = await self._call(
            "POST",
            "/v1/households",
            token,
            json=body,
            headers={"Idempotency-Key": idempotency_key},
        )
        return File(response.json(), _version(response.headers.get("ETag")))

    async def take_step(
        self,
        token: str,
        household_id: str,
        step: str,
        *,
        version: str,
        comment: str | None,
        exit_kind: str | None = None,
    ) -> File:
        body = {"comment": comment, "exit_kind": exit_kind}
        return await self._edit(
            "POST",
            f"/v1/households/{household_id}/steps/{step}",
            token,
            version,
            json={k: v for k, v in body.items() if v},
        )

    async def set_plan(
        self, token: str, household_id: str, measures: list[dict[str, Any]], *, version: str
    ) -> File:
        return await self._edit(
            "PUT",
            f"/v1/households/{household_id}/plan",
            token,
            version,
            json={"measures": measures},
        )

    async def assign_helper(self, token: str, household_id: str, body: dict[str, Any]) -> None:
        await self._call("PUT", f"/v1/households/{household_id}/helper", token, json=body)

    async def record_visit(self, token: str, household_id: str, body: dict[str, Any]) -> None:
        await self._call("POST", f"/v1/households/{household_id}/visits", token, json=body)

    async def visits(self, token: str, household_id: str) -> list[dict[str, Any]]:
        response = await self._call("GET", f"/v1/households/{household_id}/visits", token)
        items: list[dict[str, Any]] = response.json()
        return items

    async def import_ledger(self, token: str, filename: str, content: bytes) -> dict[str, Any]:
        """A county ledger (信息台账, .xlsx): each household filed whole or not at all, and the
        registry's row-by-row report."""
        response = await self._call(
            "POST",
            "/v1/imports/ledger",
            token,
            files={"file": (filename, content, XLSX)},
        )
        report: dict[str, Any] = response.json()
        return report

    async def ledger_template(self, token: str) -> bytes:
        """An empty ledger to fill in, with the import's columns and their lists."""
        return (await self._call("GET", "/v1/imports/ledger/template", token)).content

    async def card(self, token: str, household_id: str) -> bytes:
        response = await self._call("GET", f"/v1/households/{household_id}/card.xlsx", token)
        return response.content

    async def record_income(
        self, token: str, household_id: str, *, month: str, income_fen: int
    ) -> None:
        """A month's income of an enrolled household (the registry keeps one per month)."""
        await self._call(
            "PUT",
            f"/v1/households/{household_id}/incomes/{month}",
            token,
            json={"month": month, "income_fen": income_fen},
        )

    async def incomes(self, token: str, household_id: str) -> list[dict[str, Any]]:
        response = await self._call("GET", f"/v1/households/{household_id}/incomes", token)
        items: list[dict[str, Any]] = response.json()
        return items

    async def add_member(
        self, token: str, household_id: str, member: dict[str, Any], *, version: str
    ) -> File:
        return await self._edit(
            "POST", f"/v1/households/{household_id}/members", token, version, json=member
        )

    async def update_member(
        self,
        token: str,
        household_id: str,
        member_id: str,
        changes: dict[str, Any],
        *,
        version: str,
    ) -> File:
        """Change a member's circumstances (labour capacity, employment, health, ...)."""
        return await self._edit(
            "PATCH",
            f"/v1/households/{household_id}/members/{member_id}",
            token,
            version,
            json=changes,
        )

    async def declare(
        self, token: str, household_id: str, items: list[dict[str, Any]], *, version: str
    ) -> File:
        """Declared income and assets (家庭收入、财产申报), added to those on file."""
        return await self._edit(
            "POST",
            f"/v1/households/{household_id}/declarations",
            token,
            version,
            json={"items": items},
        )

    async def declarations(self, token: str, household_id: str) -> list[dict[str, Any]]:
        response = await self._call("GET", f"/v1/households/{household_id}/declarations", token)
        items: list[dict[str, Any]] = response.json()
        return items

    async def remove_member(
        self, token: str, household_id: str, member_id: str, *, reason: str, version: str
    ) -> File:
        return await self._edit(
            "DELETE",
            f"/v1/households/{household_id}/members/{member_id}",
            token,
            version,
            params={"reason": reason},
        )
