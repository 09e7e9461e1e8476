"""The ops commands against a real NATS: dead letters listed and replayed, streams, outboxes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import nats
import pytest
from typer.testing import CliRunner

from bangfu.cli import app
from shared.db import Database, UnitOfWork
from shared.events.consumer import ConsumerRunner, Subscription
from shared.events.envelope import CloudEvent
from shared.events.outbox import OutboxRelay
from shared.events.streams import ensure_dead_letter_stream, ensure_stream
from tests.eventkit import effect_count, record_effect, sample_event

runner = CliRunner()


def lines(output: str) -> list[dict[str, object]]:
    """The command's JSON rows; the consumer's JSON log lines, running meanwhile in this
    process, land in the same captured stdout once an app has set up JSON logging."""
    rows = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return [row for row in rows if "event" not in row]


class TestDeadLetters:
    async def test_a_dead_letter_is_listed_then_replayed_to_the_fixed_consumer(
        self, database: Database, nats_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("BANGFU_NATS_URL", nats_url)
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        await ensure_stream(js, name="REGISTRY", subjects=["bangfu.registry.>"])
        await ensure_dead_letter_stream(js)
        broken = True

        async def handler(event: CloudEvent, uow: UnitOfWork) -> None:
            if broken:
                raise RuntimeError("schema drift")
            await record_effect(event, uow)

        consumer = ConsumerRunner(
            database,
            js,
            Subscription("ops-test", "REGISTRY", ["bangfu.registry.>"], handler),
            max_deliver=2,
            retry_delays=(0.05,),
        )
        async with database.unit_of_work() as uow:
            uow.publish(sample_event("h-ops", 1))
            await uow.commit()
        await OutboxRelay(database, js).relay_once()
        await consumer.start()
        try:
            for _ in range(100):
                listed = await asyncio.to_thread(runner.invoke, app, ["dlq", "list"])
                if lines(listed.output):
                    break
                await asyncio.sleep(0.1)
            [dead] = lines(listed.output)
            assert dead["consumer"] == "ops-test"
            assert dead["reason"] == "RuntimeError: schema drift"
            assert dead["subject"] == "bangfu.registry.household.changed.41.13.02"
            broken = False
            replayed = await asyncio.to_thread(
                runner.invoke, app, ["dlq", "replay", str(dead["seq"])]
            )
            assert replayed.output.strip() == "replayed 1 dead letters"
            for _ in range(100):
                if await effect_count(database) == 1:
                    break
                await asyncio.sleep(0.05)
        finally:
            await consumer.stop()
            await nc.close()
        assert await effect_count(database) == 1
        after = await asyncio.to_thread(runner.invoke, app, ["dlq", "list"])
        assert lines(after.output) == []

    def test_replay_without_sequence_numbers_says_what_to_give(
        self, nats_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("BANGFU_NATS_URL", nats_url)
        result = runner.invoke(app, ["dlq", "replay"])
        assert result.exit_code == 2
        assert "bangfu dlq list" in result.output


class TestStreamsAndOutboxes:
    async def test_streams_and_outbox_status_report_what_is_there(
        self, nats_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("BANGFU_NATS_URL", nats_url)
        monkeypatch.setenv("BANGFU_HOME", str(tmp_path))
        monkeypatch.delenv("BANGFU_DATABASE_URL", raising=False)
        nc = await nats.connect(nats_url)
        await ensure_stream(
            nc.jetstream(), name="REGISTRY", subjects=["bangfu.registry.>"], max_age_days=30
        )
        await nc.close()
        streams = lines((await asyncio.to_thread(runner.invoke, app, ["streams"])).output)
        assert [(s["stream"], s["max_age_days"]) for s in streams] == [("REGISTRY", 30.0)]
        migrated = await asyncio.to_thread(runner.invoke, app, ["migrate"])
        assert migrated.exit_code == 0, migrated.output
        status = lines((await asyncio.to_thread(runner.invoke, app, ["outbox", "status"])).output)
        assert [(s["service"], s["unpublished"]) for s in status] == [
            ("registry", 0),
            ("verification", 0),
            ("benefits", 0),
            ("notifications", 0),
        ]


async def test_streams_create_makes_every_stream_with_the_suite_retention(
    nats_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BANGFU_NATS_URL", nats_url)
    monkeypatch.setenv("BANGFU_HOME", str(tmp_path))
    monkeypatch.setenv("BANGFU_STREAM_MAX_AGE_DAYS", "90")

    result = await asyncio.to_thread(runner.invoke, app, ["streams", "--create"])

    assert result.exit_code == 0, result.output
    streams = {s["stream"]: s for s in lines(result.output)}
    assert set(streams) == {"REGISTRY", "VERIFICATION", "BENEFITS", "NOTIFICATIONS", "DLQ"}
    assert streams["REGISTRY"]["subjects"] == ["bangfu.registry.>"]
    assert streams["VERIFICATION"]["max_age_days"] == 90.0
