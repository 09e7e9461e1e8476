"""The verification service's REST API (核对), called with the signed-in person's token.

Consents (核对授权书) are recorded per person with the number typed from the signed paper; the
service keeps it under a blind index and answers it masked. Reports are read as JSON and shown
by the console's own templates (the service's HTML report has its own inline style, which the
console's CSP would not apply).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.console import labels
from services.console.registry import Api, ApiError


class Verification(Api):
    async def record_consent(self, token: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self._call("POST", "/v1/consents", token, json=body)
        consent: dict[str, Any] = response.json()
        return consent

    async def household_consents(self, token: str, household_id: str) -> list[dict[str, Any]]:
        """The consents recorded for the household's members (numbers masked), with their state."""
        response = await self._call(
            "POST", "/v1/consents/search", token, json={"household_id": household_id}
        )
        consents: list[dict[str, Any]] = response.json()
        return consents

    async def revoke_consent(self, token: str, consent_id: str, *, reason: str) -> dict[str, Any]:
        """撤回授权: the consent ends today; queries made under it before stay lawful."""
        response = await self._call(
            "POST", f"/v1/consents/{consent_id}/revoke", token, json={"reason": reason}
        )
        revoked: dict[str, Any] = response.json()
        return revoked

    async def request(self, token: str, household_id: str, *, purpose: str) -> dict[str, Any]:
        """Ask the departments about a filed household (202: the report follows)."""
        body = {"household_id": household_id, "purpose": purpose}
        response = await self._call("POST", "/v1/verifications", token, json=body)
        started: dict[str, Any] = response.json()
        return started

    async def latest(self, token: str, household_id: str) -> dict[str, Any] | None:
        """The household's newest verification (any status), or None."""
        response = await self._call(
            "GET", "/v1/verifications", token, params={"household_id": household_id, "limit": 1}
        )
        rows: list[dict[str, Any]] = response.json()
        return rows[0] if rows else None

    async def latest_report(self, token: str, household_id: str) -> dict[str, Any] | None:
        """The report of the household's newest completed verification, or None."""
        response = await self._call(
            "GET",
            "/v1/verifications",
            token,
            params={"household_id": household_id, "status": "completed", "limit": 1},
        )
        rows: list[dict[str, Any]] = response.json()
        if not rows:
            return None
        try:
            report = await self._call("GET", f"/v1/verifications/{rows[0]['id']}/report", token)
        except ApiError as error:
            if error.status == 404:  # completed a moment ago, its report not yet readable
                return None
            raise
        body: dict[str, Any] = report.json()
        return body

    async def departments(self, token: str) -> list[dict[str, Any]]:
        """Each department's transport and live health (circuit, failures)."""
        response = await self._call("GET", "/v1/departments", token)
        health: list[dict[str, Any]] = response.json()
        return health


@dataclass(frozen=True)
class ReportView:
    """The 核对报告 as a person reads it: members by name, missing departments said plainly."""

    body: dict[str, Any]
    names: dict[str, str]  # member id → "name（masked number）"
    unavailable: list[str]  # departments that did not answer (部门未响应 or unreadable)
    no_consent: dict[str, list[str]] = field(default_factory=dict)  # member → departments

    @property
    def report(self) -> dict[str, Any]:
        found: dict[str, Any] = self.body["report"]
        return found

    def member(self, member_id: str) -> str:
        return self.names.get(member_id, member_id)


def report_view(body: dict[str, Any], household: dict[str, Any]) -> ReportView:
    masked = {m["member_id"]: m["identity_number"] for m in body.get("members", [])}
    names = {
        m["id"]: f"{m['name']}（{masked.get(m['id'], m.get('identity_number', ''))}）"
        for m in household.get("members", [])
    }
    items = body["report"].get("items", [])
    no_consent: dict[str, list[str]] = {}
    for item in items:
        if item["status"] == "no_consent":
            no_consent.setdefault(item["member_id"], []).append(
                labels.word(labels.DEPARTMENT, item["department"])
            )
    unavailable = [
        labels.word(labels.DEPARTMENT, d) for d in body["report"].get("unavailable_departments", [])
    ]
    return ReportView(body, names, unavailable, no_consent)


async def latest_report(
    verification: Verification, token: str, household: dict[str, Any]
) -> tuple[ReportView | None, dict[str, Any] | None]:
    """The file's latest report and its newest verification (which may still be running).

    A person without `verification:request` (or a verification service that does not answer)
    sees the registry's summary alone: the file never fails for the report's sake.
    """
    try:
        newest = await verification.latest(token, household["id"])
        body = await verification.latest_report(token, household["id"])
    except ApiError:
        return None, None
    return (report_view(body, household) if body else None), as_of_report(newest, body)


def as_of_report(
    newest: dict[str, Any] | None, report: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The newest verification as the report read after it shows it: one that completed
    between the two reads is completed, not still running beside its own report."""
    if newest is not None and report is not None and report["verification_id"] == newest["id"]:
        return {**newest, "status": "completed"}
    return newest


async def consents_on_file(
    verification: Verification, token: str, household_id: str
) -> list[dict[str, Any]] | None:
    """The household's consents, or None when the verification service does not answer: the
    file never fails for their sake (the page says they cannot be shown)."""
    try:
        return await verification.household_consents(token, household_id)
    except ApiError:
        return None
