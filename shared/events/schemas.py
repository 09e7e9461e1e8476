"""JSON Schemas of a service's event payloads, generated from their definitions and served."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter
from pydantic import TypeAdapter

from shared.events.asyncapi import asyncapi_document
from shared.events.envelope import SCHEMA_BASE, event_type
from shared.problems import Problem


def data_schema(event_class: type[Any], *, type_: str) -> dict[str, Any]:
    """The JSON Schema of one event type's `data` (draft 2020-12, as OpenAPI 3.1 uses)."""
    schema = TypeAdapter(event_class).json_schema(mode="serialization")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{SCHEMA_BASE}/{type_}.json",
        "title": type_,
        **schema,
    }


def schema_router(service: str, aggregate: str, event_classes: Sequence[type[Any]]) -> APIRouter:
    """`GET /v1/events/schemas[/{type}]` and `/v1/events/asyncapi.json`: the integrators'
    contract, one schema per type and the AsyncAPI document of them all."""
    schemas = {}
    for cls in event_classes:
        type_ = event_type(service, getattr(cls, "aggregate", aggregate), cls.name)
        schemas[type_] = data_schema(cls, type_=type_)
    asyncapi = asyncapi_document(service, aggregate, event_classes)
    router = APIRouter(prefix="/v1/events", tags=["events"])

    @router.get(
        "/asyncapi.json",
        summary="The AsyncAPI 3.0 document of this service's events: subjects, envelopes, data",
    )
    async def asyncapi_json() -> dict[str, Any]:
        return asyncapi

    @router.get("/schemas", summary="Every event type this service publishes, with its schema")
    async def all_schemas() -> dict[str, Any]:
        return schemas

    @router.get("/schemas/{type_}", summary="The JSON Schema of one event type's data")
    async def one_schema(type_: str) -> dict[str, Any]:
        if type_.removesuffix(".json") not in schemas:
            raise Problem(404, "not-found", f"no event type {type_}")
        return schemas[type_.removesuffix(".json")]

    return router
