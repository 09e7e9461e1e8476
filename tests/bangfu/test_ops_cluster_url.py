"""The ops commands take `BANGFU_NATS_URL` as the services do: one URL or a cluster's nodes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bangfu.cli import app
from shared.natsserver import free_port

runner = CliRunner()


async def test_streams_reach_the_node_that_answers_when_the_first_is_down(
    nats_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BANGFU_NATS_URL", f"nats://127.0.0.1:{free_port()},{nats_url}")
    monkeypatch.setenv("BANGFU_HOME", str(tmp_path))

    created = await asyncio.to_thread(runner.invoke, app, ["streams", "--create"])
    listed = await asyncio.to_thread(runner.invoke, app, ["streams"])

    assert created.exit_code == 0, created.output
    assert listed.exit_code == 0, listed.output
    names = {json.loads(line)["stream"] for line in listed.output.splitlines() if line}
    assert names == {"REGISTRY", "VERIFICATION", "BENEFITS", "NOTIFICATIONS", "DLQ"}
