"""An HTTP SMS gateway: `POST /v1/messages` to send, `GET /v1/messages/{id}` for its status.

The shape of the local sandbox (`python -m sandbox.sms`); a real operator's gateway gets an
adapter of the same two calls.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx


class GatewayUnavailable(Exception):
    """The gateway did not answer or answered 5xx: try again later."""


class GatewayRefused(Exception):
    """The gateway refused the message (a bad number, say): retrying will not help."""


@dataclass(frozen=True)
class Report:
    """The gateway's word on one message: accepted, delivered or failed (with a reason)."""

    status: str
    reason: str | None = None


class SmsGateway:
    def __init__(self, base_url: str, *, api_key: str | None, timeout: float = 10.0):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout, headers=headers)

    async def send(self, *, to: str, text: str, reference: str) -> str:
        """Hand one message to the gateway; its id there."""
        body = await self._call(
            "POST", "/v1/messages", json={"to": to, "text": text, "ref": reference}
        )
        return str(body["id"])

    async def report(self, gateway_id: str) -> Report:
        body = await self._call("GET", f"/v1/messages/{gateway_id}")
        reason = body.get("reason")
        return Report(status=str(body["status"]), reason=str(reason) if reason else None)

    async def _call(self, method: str, path: str, **kwargs: object) -> dict[str, object]:
        try:
            response = await self._http.request(method, path, **kwargs)  # type: ignore[arg-type]
        except httpx.HTTPError as exc:
            raise GatewayUnavailable(f"SMS gateway unreachable: {exc!r}") from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise GatewayUnavailable(f"SMS gateway answered {response.status_code}")
        if response.status_code >= 400:
            raise GatewayRefused(f"SMS gateway refused: {response.text[:200]}")
        body = response.json()
        assert isinstance(body, dict)
        return body

    async def aclose(self) -> None:
        await self._http.aclose()
