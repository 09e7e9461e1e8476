"""Every registry event has a JSON Schema, and what the registry emits conforms to it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import nats
from pydantic import TypeAdapter

from services.registry.domain.events import EVENT_TYPES
from tests.services.registry.test_api import Walk, file_household


class TestRegistryEventSchemas:
    async def test_every_event_type_is_served_with_a_schema(
        self, registry: httpx.AsyncClient
    ) -> None:
        schemas = (await registry.get("/v1/events/schemas")).json()
        assert sorted(schemas) == sorted(
            f"cn.bangfu.registry.household.{cls.name}.v1" for cls in EVENT_TYPES
        )
        applied = (
            await registry.get("/v1/events/schemas/cn.bangfu.registry.household.applied.v1.json")
        ).json()
        assert "head_identity_masked" in applied["properties"]
        assert applied["$id"].endswith("cn.bangfu.registry.household.applied.v1.json")

    async def test_each_event_emitted_through_the_workflow_validates_against_its_type(
        self, registry: httpx.AsyncClient, token: Callable[..., str], nats_url: str
    ) -> None:
        nc = await nats.connect(nats_url)
        sub = await nc.subscribe("bangfu.registry.>")
        created = (await file_household(registry, token)).json()
        walk = Walk(registry, token, created["id"])
        await walk.step("community_review", "review:community")
        await walk.plan()
        await walk.step("street_review", "review:street")
        await walk.step("reject", "review:county", comment="资产超标")
        events: list[dict[str, Any]] = []
        while len(events) < 5:
            events.append(json.loads((await sub.next_msg(timeout=5)).data))
        await nc.close()
        by_name = {cls.name: cls for cls in EVENT_TYPES}
        for event in events:
            name = event["type"].split(".")[-2]
            TypeAdapter(by_name[name]).validate_python(event["data"])
        assert [e["type"].split(".")[-2] for e in events] == [
            "applied",
            "reviewed",
            "changed",
            "reviewed",
            "rejected",
        ]
