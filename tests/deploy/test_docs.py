"""docs/operations.md and the Grafana dashboard name only metrics and commands that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from bangfu.cli import app

ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = (ROOT / "docs" / "operations.md").read_text()
DASHBOARD = json.loads((ROOT / "docs" / "grafana" / "bangfu.json").read_text())
_METRIC = re.compile(r"\bbangfu_[a-z_]+")
_SUFFIXES = ("_bucket", "_sum", "_count")


def dashboard_metrics() -> set[str]:
    expressions = [
        target["expr"] for panel in DASHBOARD["panels"] for target in panel.get("targets", [])
    ]
    names = {name for expr in expressions for name in _METRIC.findall(expr)}
    return {next((n.removesuffix(s) for s in _SUFFIXES if n.endswith(s)), n) for n in names}


def documented_metrics() -> dict[str, str]:
    """Metric name -> its "Emitted by" cell, from the table in docs/operations.md."""
    rows = re.findall(r"^\| `(bangfu_[a-z_]+)` \|.*\| ([^|]+) \|$", OPERATIONS, re.MULTILINE)
    return {name: emitted.strip() for name, emitted in rows}


def test_every_dashboard_metric_is_documented() -> None:
    assert sorted(dashboard_metrics() - set(documented_metrics())) == []


def test_the_dashboard_covers_what_ops_watch() -> None:
    titles = " ".join(panel["title"].lower() for panel in DASHBOARD["panels"])
    for topic in (
        "requests",
        "outbox backlog",
        "consumer lag",
        "department availability",
        "verification latency",
        "notification failures",
    ):
        assert topic in titles
    assert len({panel["id"] for panel in DASHBOARD["panels"]}) == len(DASHBOARD["panels"])


async def test_metrics_documented_as_emitted_are_emitted(registry: httpx.AsyncClient) -> None:
    await registry.get("/healthz")
    exported = (await registry.get("/metrics")).text
    names = {
        next((n.removesuffix(s) for s in (*_SUFFIXES, "_total") if n.endswith(s)), n)
        for n in _METRIC.findall(exported)
    }
    for name, emitted in documented_metrics().items():
        if emitted.startswith("every service"):
            assert name.removesuffix("_total") in names, name
        elif emitted in ("verification", "notifications"):  # their own tests read them
            assert name.startswith(
                ("bangfu_department_", "bangfu_verification_", "bangfu_notification_")
            ), name
        else:
            assert "to be emitted" in emitted, name
            assert name.startswith(
                ("bangfu_department_", "bangfu_verification_", "bangfu_notification_")
            )


@pytest.mark.parametrize(
    "command",
    [
        "migrate",
        "streams",
        "outbox status",
        "dlq list",
        "dlq replay",
        "events tail",
        "nats-user",
        "export",
    ],
)
def test_each_documented_ops_command_exists_and_explains_itself(command: str) -> None:
    assert f"bangfu {command}" in OPERATIONS
    result = CliRunner().invoke(app, [*command.split(), "--help"])
    assert result.exit_code == 0
    assert len(result.stdout.split()) > 15
