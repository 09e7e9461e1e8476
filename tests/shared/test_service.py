"""The service runtime: consumers supervised, their restarts counted and reported by /readyz."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import nats
import pytest
from nats.js.api import DiscardPolicy
from nats.js.client import JetStreamContext
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from services.registry.settings import RegistrySettings
from shared import audit
from shared.db import UnitOfWork
from shared.events.consumer import Subscription
from shared.events.envelope import CloudEvent
from shared.events.streams import DEAD_LETTER_STREAM
from shared.service import create_service_app
from shared.settings import SuiteSettings
from tests.conftest import running
from tests.eventkit import sample_event

CONSUMER = "test-crashing"


async def always_fails(event: CloudEvent, uow: UnitOfWork) -> None:
    raise RuntimeError(f"cannot handle {event.id}")


@pytest.fixture
async def js(nats_url: str) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(nats_url)
    yield nc.jetstream()
    await nc.close()


def restarts(metrics_text: str) -> float:
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if (
                sample.name == "bangfu_consumer_restarts_total"
                and sample.labels["consumer"] == CONSUMER
            ):
                return sample.value
    return 0.0


async def fill_the_dead_letter_stream(js: JetStreamContext) -> None:
    """One message allowed and there: every dead-letter publish is refused at once."""
    config = (await js.stream_info(DEAD_LETTER_STREAM)).config
    config.max_msgs, config.discard = 1, DiscardPolicy.NEW
    await js.update_stream(config)
    await js.publish("bangfu.dlq.filler", b"{}")


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


class TestSupervisedConsumers:
    async def test_a_consumer_whose_loop_dies_is_restarted_counted_and_named_by_readyz(
        self,
        suite: SuiteSettings,
        migrated_database: Callable[[str], Awaitable[tuple[str, str | None]]],
        js: JetStreamContext,
    ) -> None:
        """The dead-letter publish fails (its stream is full): that escapes every message's
        own protection and ends the fetch loop, once per message."""
        url, schema = await migrated_database("registry")
        settings = RegistrySettings(
            suite=suite,
            database_url=url,
            database_schema=schema,
            consumer_batch_size=1,
            consumer_max_deliver=1,  # the first failure dead-letters
            consumer_restart_delay_seconds=0.05,
            consumer_restart_max_delay_seconds=0.2,
            consumer_unready_after_restarts=3,
            consumer_restart_window_seconds=3,
        )
        subscription = Subscription(
            CONSUMER, "REGISTRY", ["bangfu.registry.household.changed.>"], always_fails
        )
        app = create_service_app(
            settings=settings, title="t", description="t", subscriptions=[subscription]
        )
        async with running(app) as client:
            assert (await client.get("/readyz")).status_code == 200
            await fill_the_dead_letter_stream(js)
            for sequence in range(1, 6):
                event = sample_event("household-1", sequence)
                await js.publish(event.nats_subject, event.to_json())

            async def restarted_five_times() -> bool:
                return restarts((await client.get("/metrics")).text) == 5

            await eventually(restarted_five_times)
            unready = await client.get("/readyz")
            assert unready.status_code == 503
            check = unready.json()["checks"][f"consumer {CONSUMER}"]
            assert check.startswith("restarted 5 times in the last 3s"), check
            assert "maximum messages exceeded" in check

            # Ops make room: the same consumer, restarted and still running, dead-letters.
            await js.purge_stream(DEAD_LETTER_STREAM)
            event = sample_event("household-1", 6)
            await js.publish(event.nats_subject, event.to_json())

            async def dead_lettered() -> bool:
                return (await js.stream_info(DEAD_LETTER_STREAM)).state.messages == 1

            await eventually(dead_lettered)
            assert restarts((await client.get("/metrics")).text) == 5

            async def ready_again() -> bool:
                return (await client.get("/readyz")).status_code == 200

            await eventually(ready_again, timeout=10)  # the failures left the window

    async def test_one_restart_keeps_the_service_ready(
        self,
        suite: SuiteSettings,
        migrated_database: Callable[[str], Awaitable[tuple[str, str | None]]],
        js: JetStreamContext,
    ) -> None:
        url, schema = await migrated_database("registry")
        settings = RegistrySettings(
            suite=suite,
            database_url=url,
            database_schema=schema,
            consumer_batch_size=1,
            consumer_max_deliver=1,
            consumer_restart_delay_seconds=0.05,
        )
        subscription = Subscription(
            CONSUMER, "REGISTRY", ["bangfu.registry.household.changed.>"], always_fails
        )
        app = create_service_app(
            settings=settings, title="t", description="t", subscriptions=[subscription]
        )
        async with running(app) as client:
            await fill_the_dead_letter_stream(js)
            event = sample_event("household-1", 1)
            await js.publish(event.nats_subject, event.to_json())

            async def restarted_once() -> bool:
                return restarts((await client.get("/metrics")).text) == 1

            await eventually(restarted_once)
            ready = await client.get("/readyz")

        assert ready.status_code == 200
        assert ready.json()["checks"][f"consumer {CONSUMER}"] == "ok"


def test_the_restart_counter_is_in_a_service_that_has_not_crashed(suite: SuiteSettings) -> None:
    """The series exists from the start at 0, so an alert on its rate needs no special case."""
    settings = RegistrySettings(suite=suite)
    subscription = Subscription(CONSUMER, "REGISTRY", ["bangfu.registry.>"], always_fails)
    app = create_service_app(
        settings=settings, title="t", description="t", subscriptions=[subscription]
    )
    metrics = app.state.runtime.metrics.registry
    assert metrics.get_sample_value("bangfu_consumer_restarts_total", {"consumer": CONSUMER}) == 0


class TestAuditCheckpoint:
    async def test_a_running_service_signs_its_audit_head_into_the_checkpoint_file(
        self,
        suite: SuiteSettings,
        migrated_database: Callable[[str], Awaitable[tuple[str, str | None]]],
        tmp_path: Path,
    ) -> None:
        url, schema = await migrated_database("registry")
        settings = RegistrySettings(
            suite=suite,
            database_url=url,
            database_schema=schema,
            audit_checkpoint_file=tmp_path / "outside" / "registry-audit.json",
            audit_checkpoint_key=SecretStr("a checkpoint key only this test knows"),
            audit_checkpoint_seconds=0.05,
        )
        key = b"a checkpoint key only this test knows"
        app = create_service_app(settings=settings, title="t", description="t")
        async with running(app):
            runtime = app.state.runtime
            async with runtime.db.unit_of_work() as uow:
                for i in range(3):
                    await audit.append(
                        uow.session,
                        client_id="c",
                        action="household.read_unmasked",
                        target=f"household/{i}",
                        outcome="success",
                        now=datetime.now(UTC),
                    )
                await uow.commit()

            async def checkpointed_at_3() -> bool:
                path = settings.audit_checkpoint_path
                return path.exists() and audit.read_checkpoint(path, key=key).seq == 3

            await eventually(checkpointed_at_3, timeout=10)
