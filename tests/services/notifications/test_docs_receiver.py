"""The webhook receiver docs/notifications.md gives integrators, run as written against the
service's real deliveries: if the signing and the documented check drift apart, this fails."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from tests.conftest import serving
from tests.helpers import bearer, code_block
from tests.services.notifications.conftest import SECRET, Publish, eventually

DOC = Path(__file__).resolve().parents[3] / "docs" / "notifications.md"
DOC_SECRET = 'SECRET = b"the secret you registered"'
ADMIN = "notifications:admin"


def documented_receiver(secret: str) -> FastAPI:
    """The doc's one Python block, with only its secret replaced."""
    code = code_block(DOC.read_text(encoding="utf-8"), "python")
    assert DOC_SECRET in code
    code = code.replace(DOC_SECRET, f"SECRET = {secret.encode()!r}")
    namespace: dict[str, Any] = {}
    exec(compile(code, DOC, "exec"), namespace)  # noqa: S102 - our own docs' code
    app: FastAPI = namespace["app"]
    return app


async def test_the_documented_receiver_takes_a_signed_delivery_and_refuses_another_secret(
    notifications: httpx.AsyncClient, token: Callable[..., str], publish: Publish
) -> None:
    auth = bearer(token(ADMIN))
    with serving(documented_receiver(SECRET)) as url:
        ids = {}
        for name, secret in (("right", SECRET), ("wrong", "not-the-secret-the-receiver-holds")):
            response = await notifications.post(
                "/v1/subscriptions",
                json={
                    "url": f"{url}/bangfu",
                    "secret": secret,
                    "event_types": ["cn.bangfu.registry.household.*"],
                },
                headers=auth,
            )
            assert response.status_code == 201, response.text
            ids[name] = response.json()["id"]
        event = await publish("registry", "household", "enrolled", household_id="h-doc")

        async def deliveries(name: str) -> list[dict[str, Any]]:
            path = f"/v1/subscriptions/{ids[name]}/deliveries"
            items: list[dict[str, Any]] = (await notifications.get(path, headers=auth)).json()[
                "items"
            ]
            return items

        async def settled() -> bool:
            right, wrong = await deliveries("right"), await deliveries("wrong")
            return [d["status"] for d in right] == ["delivered"] and any(
                d["attempts"] >= 1 for d in wrong
            )

        await eventually(settled)
        (delivered,) = await deliveries("right")
        assert delivered["event_id"] == event.id
        (refused,) = await deliveries("wrong")
        assert refused["status"] != "delivered"
        attempts = (
            await notifications.get(
                f"/v1/subscriptions/{ids['wrong']}/deliveries/{refused['id']}/attempts",
                headers=auth,
            )
        ).json()
        assert {a["status_code"] for a in attempts} == {401}
