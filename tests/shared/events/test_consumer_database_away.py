"""A consumer whose database is away holds its events until it is back: no dead letters."""

from __future__ import annotations

import asyncio

import nats
import nats.js.errors
import pytest

from shared.db import Database, common_metadata
from shared.events.consumer import ConsumerRunner, Subscription, dead_letter_subject
from shared.events.envelope import new_event
from shared.events.streams import DEAD_LETTER_STREAM, ensure_dead_letter_stream, ensure_stream
from tests.deploy.private_postgres import private_postgres
from tests.eventkit import effect_count, record_effect, test_metadata

STREAM = "DBAWAY"
SUBJECTS = ["bangfu.dbaway.>"]


async def test_events_in_hand_wait_out_a_database_outage_instead_of_being_dead_lettered(
    nats_url: str,
) -> None:
    with private_postgres() as postgres:
        db = Database(postgres.url)
        async with db.engine.begin() as connection:
            await connection.run_sync(common_metadata.create_all)
            await connection.run_sync(test_metadata.create_all)
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        await ensure_stream(js, name=STREAM, subjects=SUBJECTS)
        await ensure_dead_letter_stream(js)
        await asyncio.to_thread(postgres.stop)
        # Three deliveries 0.1 s apart: on the usual schedule, dead letters within a second.
        runner = ConsumerRunner(
            db,
            js,
            Subscription("dbaway-effects", STREAM, SUBJECTS, record_effect),
            max_deliver=3,
            retry_delays=(0.1,),
            ack_wait_seconds=5,
        )
        await runner.start()
        try:
            for sequence in (1, 2, 3):
                event = new_event(
                    service="dbaway",
                    aggregate="household",
                    name="changed",
                    subject="household-1",
                    region="411302",
                    sequence=sequence,
                    data={"n": sequence},
                )
                await js.publish(
                    event.nats_subject, event.to_json(), headers={"Nats-Msg-Id": event.id}
                )
            await asyncio.sleep(4)  # the outage, well past three deliveries' worth of retries

            await asyncio.to_thread(postgres.start)
            deadline = asyncio.get_running_loop().time() + 30
            while await effect_count(db) < 3:
                assert asyncio.get_running_loop().time() < deadline, "not handled after 30s"
                await asyncio.sleep(0.1)
        finally:
            await runner.stop()
            await db.dispose()
        with pytest.raises(nats.js.errors.NotFoundError):
            await js.get_last_msg(DEAD_LETTER_STREAM, dead_letter_subject("dbaway-effects"))
        info = await js.consumer_info(STREAM, "dbaway-effects")
        assert (info.num_pending, info.num_ack_pending) == (0, 0)
        await nc.close()
