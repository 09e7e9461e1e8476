"""AsyncAPI 3.0 from the event definitions: served, exported, coherent, and true to the wire."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import nats
import pytest
from typer.testing import CliRunner

from bangfu.cli import app
from services.registry.domain.events import EVENT_TYPES
from shared.events.asyncapi import asyncapi_document
from tests.helpers import bearer, household_body

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def coherence_findings(document: dict[str, Any]) -> list[str]:
    """What would make the document unusable: dangling references, mismatched parameters."""
    findings = []
    for ref in set(refs(document)):
        try:
            resolve(document, ref)
        except (KeyError, AssertionError):
            findings.append(f"dangling {ref}")
    for name, channel in document.get("channels", {}).items():
        in_address = set(re.findall(r"\{(\w+)\}", channel["address"]))
        if in_address != set(channel.get("parameters", {})):
            findings.append(f"channel {name}: address parameters {sorted(in_address)}")
    for name, operation in document.get("operations", {}).items():
        channel = operation["channel"]["$ref"]
        for message in operation["messages"]:
            if not message["$ref"].startswith(channel + "/messages/"):
                findings.append(f"operation {name}: message not of its channel")
    return findings


def test_the_registry_document_is_coherent_and_covers_every_event() -> None:
    document = asyncapi_document("registry", "household", EVENT_TYPES)
    assert document["asyncapi"] == "3.0.0"
    assert coherence_findings(document) == []
    titles = {message["name"] for message in document["components"]["messages"].values()}
    assert titles == {f"cn.bangfu.registry.household.{cls.name}.v1" for cls in EVENT_TYPES}
    applied = document["channels"]["householdApplied"]
    assert applied["address"] == "bangfu.registry.household.applied.{province}.{city}.{county}"


def test_the_coherence_check_catches_a_dangling_reference() -> None:
    document = asyncapi_document("registry", "household", EVENT_TYPES)
    del document["components"]["schemas"]["HouseholdAppliedData"]
    document["channels"]["householdApplied"]["address"] += ".{extra}"
    assert sorted(coherence_findings(document)) == [
        "channel householdApplied: address parameters ['city', 'county', 'extra', 'province']",
        "dangling #/components/schemas/HouseholdAppliedData",
    ]


async def test_served_document_is_the_exported_one_and_the_wire_matches_it(
    registry: httpx.AsyncClient, token: Callable[..., str], nats_url: str
) -> None:
    served = (await registry.get("/v1/events/asyncapi.json")).json()
    assert served == json.loads((DOCS / "asyncapi" / "registry.json").read_text())
    nc = await nats.connect(nats_url)
    try:
        subscription = await nc.subscribe("bangfu.registry.household.applied.>")
        filed = await registry.post(
            "/v1/households",
            json=household_body("411302"),
            headers=bearer(token("registry:write", "registry:read")),
        )
        assert filed.status_code == 201
        message = await subscription.next_msg(timeout=5)
    finally:
        await nc.close()
    # The message on the wire is an instance of the document's payload and headers schemas.
    root = {"components": served["components"]}
    payload = {**root, "$ref": "#/components/messages/HouseholdApplied/payload"}
    jsonschema.validate(json.loads(message.data), payload)
    assert message.headers is not None
    jsonschema.validate(dict(message.headers), {**root, "$ref": "#/components/schemas/NatsHeaders"})
    # And what it does not allow, it refuses.
    wrong = {**json.loads(message.data), "type": "cn.bangfu.registry.household.enrolled.v1"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(wrong, payload)


def test_the_committed_documents_are_up_to_date() -> None:
    result = CliRunner().invoke(app, ["export", "--check", "--out", str(DOCS)])
    assert result.exit_code == 0, (
        f"{result.stderr}\nRegenerate them with `bangfu export` and commit docs/openapi, "
        "docs/asyncapi."
    )


def test_export_check_fails_on_a_stale_document(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["export", "--out", str(tmp_path)]).exit_code == 0
    assert sorted(p.name for p in (tmp_path / "openapi").iterdir()) == [
        "benefits.json",
        "notifications.json",
        "registry.json",
        "verification.json",
    ]
    assert runner.invoke(app, ["export", "--check", "--out", str(tmp_path)]).exit_code == 0
    stale = tmp_path / "openapi" / "registry.json"
    stale.write_text(stale.read_text().replace('"Bangfu registry"', '"Bangfu"'))
    result = runner.invoke(app, ["export", "--check", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert str(stale) in result.stderr
