"""Outbox -> relay -> JetStream -> durable consumer with inbox, against a real nats-server."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import nats
import pytest
from nats.js.api import ConsumerConfig
from nats.js.client import JetStreamContext
from sqlalchemy import event as sqlalchemy_event
from sqlalchemy import func, literal, select, text, update
from sqlalchemy.engine.default import CacheStats

from shared.db import Database, UnitOfWork, write_together
from shared.events.consumer import ConsumerRunner, Subscription, dead_letter_subject
from shared.events.envelope import CloudEvent
from shared.events.outbox import (
    OutboxRelay,
    at_once,
    backlog,
    note_at_once,
    outbox,
    outbox_cte,
    outbox_params,
    outbox_rows,
)
from shared.events.streams import DEAD_LETTER_STREAM, ensure_dead_letter_stream, ensure_stream
from shared.registry_client import RegistryAway
from tests.eventkit import effect_count, effects, record_effect, sample_event

STREAM = "REGISTRY"
SUBJECTS = ["bangfu.registry.>"]


@pytest.fixture
async def js(nats_url: str) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(nats_url)
    jetstream = nc.jetstream()
    await ensure_stream(jetstream, name=STREAM, subjects=SUBJECTS)
    await ensure_dead_letter_stream(jetstream)
    yield jetstream
    await nc.close()


async def write_events(db: Database, events: list[CloudEvent]) -> None:
    async with db.unit_of_work() as uow:
        uow.publish(*events)
        await uow.commit()


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def consumer(
    db: Database,
    js: JetStreamContext,
    handler: Callable[..., Awaitable[None]] = record_effect,
    **options: object,
) -> ConsumerRunner:
    return ConsumerRunner(
        db, js, Subscription("test-effects", STREAM, SUBJECTS, handler), **options
    )  # type: ignore[arg-type]


class TestOutboxAndRelay:
    async def test_every_event_arrives_exactly_once_in_order_per_aggregate(
        self, database: Database, js: JetStreamContext
    ) -> None:
        aggregates = [f"household-{i}" for i in range(10)]
        for sequence in range(1, 31):
            await write_events(database, [sample_event(a, sequence) for a in aggregates])
        relay = OutboxRelay(database, js, batch_size=50, poll_seconds=0.05)
        runner = consumer(database, js)
        relay.start()
        await runner.start()
        try:
            await wait_for(lambda: _count_is(database, 300))
            await asyncio.sleep(0.3)  # would-be duplicates get time to show up
        finally:
            await runner.stop()
            await relay.stop()
        handled = await effects(database)
        assert len(handled) == 300
        assert len({event_id for event_id, _, _ in handled}) == 300
        per_aggregate = collections.defaultdict(list)
        for _, aggregate, sequence in handled:
            per_aggregate[aggregate].append(sequence)
        assert all(seqs == list(range(1, 31)) for seqs in per_aggregate.values())
        async with database.sessionmaker() as session:
            assert (await backlog(session)).count == 0

    async def test_three_relays_on_one_database_publish_each_event_once_in_order(
        self, database: Database, js: JetStreamContext
    ) -> None:
        aggregates = [f"household-{i}" for i in range(4)]
        for sequence in range(1, 51):
            await write_events(database, [sample_event(a, sequence) for a in aggregates])
        # All start together on a full outbox: each claims a slice holding the same aggregates.
        # On PostgreSQL each is a replica with a Database of its own, so each claims on a
        # connection of its own, at the same time as the others.
        replicas = (
            [Database(database.url, schema=database.schema) for _ in range(3)]
            if database.dialect == "postgresql"
            else [database] * 3
        )
        relays = [OutboxRelay(db, js, batch_size=3, poll_seconds=0.01) for db in replicas]
        for relay in relays:
            relay.start()
        runner = consumer(database, js)
        await runner.start()
        try:
            await wait_for(lambda: _count_is(database, 200))  # 4 aggregates x 50
            await asyncio.sleep(0.3)
        finally:
            await runner.stop()
            for relay in relays:
                await relay.stop()
            for db in replicas:
                if db is not database:
                    await db.dispose()
        info = await js.stream_info(STREAM)
        assert info.state.messages == 200  # no event published twice
        per_aggregate = collections.defaultdict(list)
        for _, aggregate, sequence in await effects(database):
            per_aggregate[aggregate].append(sequence)
        assert all(seqs == list(range(1, 51)) for seqs in per_aggregate.values())

    async def test_a_relay_holds_back_events_whose_predecessor_another_relay_has_claimed(
        self, database: Database, js: JetStreamContext
    ) -> None:
        if database.dialect == "sqlite":
            pytest.skip("SQLite has one writer: no other relay can hold a claim")
        for sequence in (1, 2, 3):
            await write_events(
                database, [sample_event("held", sequence), sample_event("free", sequence)]
            )
        async with database.sessionmaker() as other_relay, other_relay.begin():
            # Another replica has claimed `held`'s first event and not yet published it.
            await other_relay.execute(
                select(outbox.c.position)
                .where(outbox.c.aggregate == "held")
                .order_by(outbox.c.position)
                .limit(1)
                .with_for_update()
            )
            published = await OutboxRelay(database, js).relay_once()
            assert published == 3
            assert await _subjects_in_stream(js) == ["free"] * 3
        assert await OutboxRelay(database, js).relay_once() == 3
        assert await _subjects_in_stream(js) == ["free"] * 3 + ["held"] * 3

    async def test_an_event_is_not_published_until_its_transaction_commits(
        self, database: Database, js: JetStreamContext
    ) -> None:
        relay = OutboxRelay(database, js)
        async with database.unit_of_work() as uow:
            uow.publish(sample_event("h-rolled-back", 1))
            # no commit: the unit of work rolls back
        assert await relay.relay_once() == 0
        await write_events(database, [sample_event("h-committed", 1)])
        assert await relay.relay_once() == 1
        info = await js.stream_info(STREAM)
        assert info.state.messages == 1

    async def test_the_running_relay_marks_sent_after_publishing_and_all_of_it_on_stop(
        self, database: Database, js: JetStreamContext
    ) -> None:
        relay = OutboxRelay(database, js, poll_seconds=0.05, mark_seconds=60)
        relay.start()
        await write_events(database, [sample_event("h-marked", n) for n in (1, 2, 3)])
        await wait_for(lambda: _has_messages(js, 3))

        async def unsent() -> int:
            async with database.sessionmaker() as session:
                return (await backlog(session)).count

        if database.dialect == "sqlite":  # PostgreSQL's claim marks them as it takes them
            assert await unsent() == 3
        await relay.stop()
        assert await unsent() == 0

    async def test_clearing_sent_rows_keeps_the_newest_so_that_no_position_comes_again(
        self, database: Database, js: JetStreamContext
    ) -> None:
        # SQLite numbers a row after the highest one left: with every row cleared, the next
        # event would take a position the relay has already read past, and never be published.
        old = [sample_event("h-cleared", n) for n in (1, 2)]
        await write_events(database, old)
        relay = OutboxRelay(database, js, keep_sent=timedelta(0))
        assert await relay.relay_once() == 2
        await relay._housekeeping()
        async with database.sessionmaker() as session:
            left = (await session.execute(select(outbox.c.event_id))).scalars().all()
        assert left == [old[1].id]
        await write_events(database, [sample_event("h-cleared", 3)])
        assert await relay.relay_once() == 1
        assert await _sequences_in_stream(js, "h-cleared") == [1, 2, 3]

    async def test_a_republished_event_is_dropped_by_the_duplicate_window(
        self, database: Database, js: JetStreamContext
    ) -> None:
        event = sample_event("h-dup", 1)
        await write_events(database, [event])
        relay = OutboxRelay(database, js)
        assert await relay.relay_once() == 1
        # As if the relay crashed after publishing and before marking the row sent.
        async with database.sessionmaker() as session, session.begin():
            from sqlalchemy import update

            from shared.events.outbox import outbox

            await session.execute(update(outbox).values(sent_at=None))
        assert await OutboxRelay(database, js).relay_once() == 1  # the relay started again
        info = await js.stream_info(STREAM)
        assert info.state.messages == 1

    @pytest.mark.parametrize("failure", ["error", "no ack in time"])
    async def test_a_failed_publish_leaves_its_event_and_its_aggregates_later_ones_unsent(
        self, database: Database, js: JetStreamContext, failure: str
    ) -> None:
        failing = [sample_event("h-fails", sequence) for sequence in (1, 2, 3)]
        await write_events(database, [failing[0], sample_event("h-fine", 1)])
        await write_events(database, [failing[1], failing[2], sample_event("h-fine", 2)])
        failing_js = FailsOnce(js, failing[1].id, never_acked=failure == "no ack in time")
        relay = OutboxRelay(database, failing_js, publish_timeout=0.2)  # type: ignore[arg-type]
        assert await relay.relay_once() == 3  # h-fails 1 and both of h-fine
        async with database.sessionmaker() as session:
            unsent = await session.execute(
                select(outbox.c.event_id)
                .where(outbox.c.sent_at.is_(None))
                .order_by(outbox.c.position)
            )
            assert list(unsent.scalars()) == [failing[1].id, failing[2].id]
        assert await relay.relay_once() == 2
        assert await _sequences_in_stream(js, "h-fails") == [1, 2, 3]

    async def test_a_claim_skips_the_entries_sent_rows_left_in_the_unsent_index(
        self, database: Database, js: JetStreamContext
    ) -> None:
        if database.dialect != "postgresql":
            pytest.skip("SQLite's relay reads the unsent rows without a claim")
        # As after a busy minute: rows of many writers out of position order in the table,
        # statistics expecting few unsent rows, and in the unsent index an entry for each row
        # since sent, which no VACUUM has removed yet. The planner's own choice is a bitmap scan.
        async with database.sessionmaker() as session, session.begin():
            await session.execute(text("ALTER TABLE outbox SET (autovacuum_enabled = false)"))
            await session.execute(
                text(
                    "INSERT INTO outbox (position, event_id, aggregate, nats_subject, body,"
                    " created_at) SELECT n, n::text, 'household-' || n % 1000, 'bangfu.x', '{}',"
                    " now() FROM generate_series(1, 5000) AS n ORDER BY random()"
                )
            )
            await session.execute(
                update(outbox).where(outbox.c.position % 25 != 0).values(sent_at=func.now())
            )
            await session.execute(text("ANALYZE outbox"))
            await session.execute(update(outbox).values(sent_at=func.now()))
        relay = OutboxRelay(database, js)

        async def blocks_read_by_a_claim() -> int:
            # The backend's counts since its last report of statistics: read on both sides.
            read = text(
                "SELECT pg_stat_get_xact_blocks_fetched('outbox'::regclass)"
                " + pg_stat_get_xact_blocks_fetched('ix_outbox_unsent'::regclass)"
            )
            async with database.claiming() as session:
                before = await session.scalar(read)
                assert await relay.claim(session) == []
                return int(await session.scalar(read)) - int(before)

        await blocks_read_by_a_claim()  # the first claim finds them dead
        # Then a few pages of the index (20), where the planner's scan read the table again
        # at every claim (245); so too once the cached claim keeps a generic plan (after five).
        assert [await blocks_read_by_a_claim() < 50 for _ in range(8)] == [True] * 8
        async with database.claiming() as session:  # the claim's connection: its statements
            generic = await session.scalars(
                text(
                    "SELECT generic_plans FROM pg_prepared_statements"
                    " WHERE statement LIKE '%FOR UPDATE SKIP LOCKED%'"
                    " AND statement NOT LIKE '%pg_prepared_statements%'"  # this one
                )
            )
            assert max(generic) > 0  # not planned anew at every pass

    async def test_events_committed_between_passes_follow_in_order(
        self, database: Database, js: JetStreamContext
    ) -> None:
        # On SQLite a pass reads the next pass's rows as it marks its own: what is committed
        # after that read must still be published, after them.
        await write_events(database, [sample_event("h-passes", n) for n in (1, 2, 3)])
        relay = OutboxRelay(database, js, batch_size=2)
        assert await relay.relay_once() == 2
        await write_events(database, [sample_event("h-passes", 4)])
        assert await relay.relay_once() + await relay.relay_once() == 2
        assert await relay.relay_once() == 0
        assert await _sequences_in_stream(js, "h-passes") == [1, 2, 3, 4]


class TestEventsWrittenByTheChangesStatement:
    """`UnitOfWork.take_events` hands the queued events to a statement that writes their
    outbox rows itself (PostgreSQL carries them as CTEs of the change's statement)."""

    @staticmethod
    async def write_taken(uow: UnitOfWork, *, when: bool = True) -> None:
        events = uow.take_events()
        if uow.session.get_bind().dialect.name == "postgresql":
            statement = select(literal(1)).add_cte(outbox_cte(when=literal(when)))
            await uow.session.execute(statement, outbox_params(events))
        else:
            await write_together(uow.session, [(outbox, outbox_rows(events))])

    async def test_taken_events_are_published_as_written_and_wake_the_relay_at_commit(
        self, database: Database, js: JetStreamContext
    ) -> None:
        woken: list[list[str]] = []
        database.after_commit = lambda committed: woken.append([e.id for e in committed])
        events = [sample_event("h-taken", n) for n in range(1, 6)]
        async with database.unit_of_work() as uow:
            uow.publish(*events)
            await self.write_taken(uow)
            assert uow.take_events() == []  # nothing is left for the commit to write
            await uow.commit()
            await uow.commit()  # a second commit with nothing new wakes nobody
        assert woken == [[e.id for e in events]]  # told the events it committed, once
        assert await OutboxRelay(database, js).relay_once() == 5
        assert await _sequences_in_stream(js, "h-taken") == [1, 2, 3, 4, 5]
        async with database.sessionmaker() as session:
            bodies = (await session.scalars(select(outbox.c.body).order_by("position"))).all()
        assert bodies == [e.to_json().decode() for e in events]

    async def test_a_failed_savepoint_gives_back_the_events_it_took(
        self, database: Database, js: JetStreamContext
    ) -> None:
        before, inside = sample_event("h-savepoint", 1), sample_event("h-undone", 1)
        woken: list[list[str]] = []
        database.after_commit = lambda committed: woken.append([e.id for e in committed])
        async with database.unit_of_work() as uow:
            uow.publish(before)
            with pytest.raises(RuntimeError):
                async with uow.savepoint():
                    uow.publish(inside)
                    await self.write_taken(uow)
                    raise RuntimeError("undo the part")
            await uow.commit()
        assert woken == [[before.id]]  # the undone part's event is not among those committed
        assert await OutboxRelay(database, js).relay_once() == 1
        assert await _subjects_in_stream(js) == ["h-savepoint"]

    async def test_a_change_with_no_events_writes_no_outbox_row(self, database: Database) -> None:
        async with database.unit_of_work() as uow:
            await self.write_taken(uow)  # nothing was queued
            await uow.commit()
            assert await uow.session.scalar(select(func.count()).select_from(outbox)) == 0

    async def test_a_condition_that_fails_writes_no_row(self, database: Database) -> None:
        if database.dialect != "postgresql":
            pytest.skip("the CTEs are PostgreSQL's; SQLite writes the rows beside the change")
        async with database.unit_of_work() as uow:
            uow.publish(sample_event("h-not-written", 1))
            await self.write_taken(uow, when=False)
            await uow.commit()
            assert await uow.session.scalar(select(func.count()).select_from(outbox)) == 0


class TestPublishedAtOnce:
    """PostgreSQL: a unit of one write hands the relay, at its commit, the events its statement
    found free (`at_once`: no earlier event of their aggregate unsent); they are published then,
    without a pass, and marked sent later."""

    @pytest.fixture(autouse=True)
    def postgresql_only(self, database: Database) -> None:
        if database.dialect != "postgresql":
            pytest.skip("a unit of one write is a transaction on SQLite, published by a pass")

    @staticmethod
    async def write_one(db: Database, events: list[CloudEvent]) -> list[str]:
        """The events written by a unit of one write's statement; the ids it found free."""
        async with db.unit_of_work(one_write=True) as uow:
            uow.publish(*events)
            written = outbox_cte()
            statement = select(at_once(written)).add_cte(written)
            free = (await uow.session.execute(statement, outbox_params(uow.take_events()))).one()
            note_at_once(uow.session, free.outbox_at_once)
            await uow.commit()
        return list(free.outbox_at_once or [])

    @staticmethod
    def attach(db: Database, relay: OutboxRelay) -> None:
        db.after_commit, db.publish_at_once = relay.wake, relay.publish_at_once

    async def test_the_events_are_published_at_the_commit_with_no_pass_and_marked_sent(
        self, database: Database, js: JetStreamContext
    ) -> None:
        relay = OutboxRelay(database, js, mark_seconds=0.01)  # never started: no pass runs
        self.attach(database, relay)
        events = [sample_event("h-now", n) for n in (1, 2, 3)] + [sample_event("h-too", 1)]
        assert await self.write_one(database, events) == [e.id for e in events]
        await wait_for(lambda: _has_messages(js, 4))
        assert await _sequences_in_stream(js, "h-now") == [1, 2, 3]
        await relay.marked()
        async with database.sessionmaker() as session:
            assert (await backlog(session)).count == 0
        assert await relay.relay_once() == 0

    async def test_an_aggregate_with_an_event_unsent_waits_for_a_pass_to_keep_its_order(
        self, database: Database, js: JetStreamContext
    ) -> None:
        await write_events(database, [sample_event("h-behind", 1)])  # in a transaction: unsent
        relay = OutboxRelay(database, js)
        self.attach(database, relay)
        behind, free = sample_event("h-behind", 2), sample_event("h-free", 1)
        assert await self.write_one(database, [behind, free]) == [free.id]
        await wait_for(lambda: _has_messages(js, 1))
        await asyncio.sleep(0.2)  # a wrong publish of h-behind's second gets time to show
        assert await _subjects_in_stream(js) == ["h-free"]
        assert await relay.relay_once() == 2
        assert await _sequences_in_stream(js, "h-behind") == [1, 2]

    async def test_a_publish_at_once_that_fails_is_left_unsent_for_a_pass(
        self, database: Database, js: JetStreamContext
    ) -> None:
        event = sample_event("h-failed", 1)
        relay = OutboxRelay(database, FailsOnce(js, event.id), mark_seconds=0.01)  # type: ignore[arg-type]
        self.attach(database, relay)
        await self.write_one(database, [event])
        await relay.stop()  # its publish at once has failed, nothing is marked
        async with database.sessionmaker() as session:
            assert (await backlog(session)).count == 1
        assert await relay.relay_once() == 1
        assert await _subjects_in_stream(js) == ["h-failed"]

    async def test_a_pass_meanwhile_awaits_the_publish_at_once_rather_than_publish_again(
        self, database: Database, js: JetStreamContext
    ) -> None:
        slow = Delayed(js, ack_seconds=0.3)
        relay = OutboxRelay(database, slow)  # type: ignore[arg-type]
        self.attach(database, relay)
        event = sample_event("h-in-flight", 1)
        await self.write_one(database, [event])
        await asyncio.sleep(0.05)  # published, its PubAck not yet come
        assert await relay.relay_once() == 1  # claimed, and done once that PubAck came
        assert slow.published == [event.id]
        async with database.sessionmaker() as session:
            assert (await backlog(session)).count == 0
        await relay.stop()

    async def test_across_replicas_an_event_written_behind_one_published_at_once_keeps_order(
        self, database: Database, js: JetStreamContext
    ) -> None:
        replica = Database(database.url, schema=database.schema)
        first_relay = OutboxRelay(database, Delayed(js, publish_seconds=0.3))  # type: ignore[arg-type]
        second_relay = OutboxRelay(replica, js)
        self.attach(database, first_relay)
        self.attach(replica, second_relay)
        try:
            first, second = sample_event("h-moved", 1), sample_event("h-moved", 2)
            assert await self.write_one(database, [first]) == [first.id]  # stored in 0.3 s
            # The second replica's statement sees the first event unsent: it is not free, and
            # that replica's pass publishes the first before it.
            assert await self.write_one(replica, [second]) == []
            assert await second_relay.relay_once() == 2
            await first_relay.stop()  # its late publish is a duplicate, dropped
            assert await _sequences_in_stream(js, "h-moved") == [1, 2]
            assert (await js.stream_info(STREAM)).state.messages == 2
        finally:
            await second_relay.stop()
            await replica.dispose()


async def _count_is(db: Database, n: int) -> bool:
    return await effect_count(db) >= n


class TestConsumer:
    async def test_a_consumer_dying_before_ack_gets_a_redelivery_the_inbox_makes_harmless(
        self, database: Database, js: JetStreamContext
    ) -> None:
        await write_events(database, [sample_event("h-crash", 1)])
        await OutboxRelay(database, js).relay_once()
        runner = consumer(database, js, ack_wait_seconds=1)
        # The first incarnation handles the event and commits, then dies before it can ack.
        await js.add_consumer(
            STREAM,
            ConsumerConfig(
                durable_name="test-effects", ack_wait=1, max_deliver=5, filter_subjects=SUBJECTS
            ),
        )
        pull = await js.pull_subscribe_bind(durable="test-effects", stream=STREAM)
        [message] = await pull.fetch(1, timeout=2)
        assert await runner.process(message) is True
        assert await effect_count(database) == 1
        await pull.unsubscribe()
        # The next incarnation receives the redelivery after ack_wait and only acknowledges it.
        await runner.start()
        try:
            await wait_for(lambda: _no_pending(js), timeout=10)
        finally:
            await runner.stop()
        assert await effect_count(database) == 1

    async def test_a_poison_message_goes_to_the_dead_letter_subject_after_max_deliver(
        self, database: Database, js: JetStreamContext
    ) -> None:
        attempts = 0

        async def always_fails(event: CloudEvent, uow: UnitOfWork) -> None:
            nonlocal attempts
            attempts += 1
            await record_effect(event, uow)  # rolled back with the failure
            raise RuntimeError("cannot handle this")

        await write_events(database, [sample_event("h-poison", 1)])
        await OutboxRelay(database, js).relay_once()
        runner = consumer(database, js, always_fails, max_deliver=3, retry_delays=(0.05,))
        await runner.start()
        try:
            dead = await _dead_letters(js, 1)
        finally:
            await runner.stop()
        assert attempts == 3
        assert await effect_count(database) == 0
        assert dead[0].headers["Bangfu-Deliveries"] == "3"
        assert "RuntimeError: cannot handle this" in dead[0].headers["Bangfu-Reason"]
        assert dead[0].subject == dead_letter_subject("test-effects")

    async def test_an_event_whose_deliveries_died_with_their_replicas_is_still_handled(
        self, database: Database, js: JetStreamContext
    ) -> None:
        """Each delivery counts on the server, answered or not: with JetStream's own limit at
        the runner's, the event was dropped there, neither handled nor dead-lettered."""
        first = consumer(database, js, max_deliver=2, ack_wait_seconds=1)
        await first.start()  # the durable consumer, as the service configures it
        await first.stop()
        await write_events(database, [sample_event("h-lost", 1)])
        await OutboxRelay(database, js).relay_once()
        # Two replicas in turn take the event and die holding it: no ack, no nak.
        pull = await js.pull_subscribe_bind(durable="test-effects", stream=STREAM)
        for delivery in (1, 2):
            [message] = await pull.fetch(1, timeout=5)
            assert message.metadata.num_delivered == delivery
        await pull.unsubscribe()
        await asyncio.sleep(1.5)  # the second delivery's ack_wait runs out
        runner = consumer(database, js, max_deliver=2, ack_wait_seconds=1)
        await runner.start()
        try:
            await wait_for(lambda: _count_is(database, 1), timeout=10)
        finally:
            await runner.stop()
        info = await js.consumer_info(STREAM, "test-effects")
        assert (info.num_pending, info.num_ack_pending) == (0, 0)

    async def test_a_consumer_made_with_a_delivery_limit_loses_it_when_the_service_starts(
        self, database: Database, js: JetStreamContext
    ) -> None:
        """A deployment's durable consumers were made with `max_deliver` 5 by earlier versions."""
        await js.add_consumer(
            STREAM,
            ConsumerConfig(durable_name="test-effects", max_deliver=5, filter_subjects=SUBJECTS),
        )
        runner = consumer(database, js, max_deliver=5)
        await runner.start()
        await runner.stop()
        info = await js.consumer_info(STREAM, "test-effects")
        assert info.config.max_deliver == -1

    async def test_an_event_whose_handler_waits_for_a_service_away_is_never_dead_lettered(
        self, database: Database, js: JetStreamContext
    ) -> None:
        calls = 0

        async def registry_away_four_times(event: CloudEvent, uow: UnitOfWork) -> None:
            nonlocal calls
            calls += 1
            if calls <= 4:
                raise RegistryAway("registry answered 503 for /v1/households/h-away")
            await record_effect(event, uow)

        await write_events(database, [sample_event("h-away", 1)])
        await OutboxRelay(database, js).relay_once()
        runner = consumer(
            database, js, registry_away_four_times, max_deliver=2, retry_delays=(0.05,)
        )
        await runner.start()
        try:
            await wait_for(lambda: _count_is(database, 1), timeout=15)
        finally:
            await runner.stop()
        assert calls == 5
        assert (await js.stream_info(DEAD_LETTER_STREAM)).state.messages == 0

    async def test_one_poison_message_in_a_batch_does_not_hold_up_the_others(
        self, database: Database, js: JetStreamContext
    ) -> None:
        async def fails_on_three(event: CloudEvent, uow: UnitOfWork) -> None:
            if event.sequence == 3:
                raise RuntimeError("bad data")
            await record_effect(event, uow)

        await write_events(database, [sample_event("h-batch", n) for n in range(1, 6)])
        await OutboxRelay(database, js).relay_once()
        runner = consumer(database, js, fails_on_three, max_deliver=2, retry_delays=(0.05,))
        await runner.start()
        try:
            dead = await _dead_letters(js, 1)
            await wait_for(lambda: _count_is(database, 4))
        finally:
            await runner.stop()
        assert sorted(seq for _, _, seq in await effects(database)) == [1, 2, 4, 5]
        assert CloudEvent.from_json(dead[0].data).sequence == 3

    async def test_a_batch_redelivering_handled_events_runs_the_handler_on_the_new_ones(
        self, database: Database, js: JetStreamContext
    ) -> None:
        handled: list[int] = []

        async def noting(event: CloudEvent, uow: UnitOfWork) -> None:
            handled.append(event.sequence)
            await record_effect(event, uow)

        await write_events(database, [sample_event("h-again", n) for n in range(1, 6)])
        await OutboxRelay(database, js).relay_once()
        runner = consumer(database, js, noting)
        await js.add_consumer(
            STREAM, ConsumerConfig(durable_name="test-effects", filter_subjects=SUBJECTS)
        )
        pull = await js.pull_subscribe_bind(durable="test-effects", stream=STREAM)
        first, second, *rest = await pull.fetch(5, timeout=2)
        assert await runner.process(first) is True
        assert await runner.process(second) is True
        # Delivered again with three new ones, in one batch (as after a crash before the acks).
        await runner.handle_batch([first, second, *rest])
        await pull.unsubscribe()
        assert handled == [1, 2, 3, 4, 5]
        assert sorted(seq for _, _, seq in await effects(database)) == [1, 2, 3, 4, 5]

    async def test_a_batch_claims_its_inbox_rows_with_a_statement_compiled_once(
        self, database: Database, js: JetStreamContext
    ) -> None:
        # Built with its rows, the statement was compiled anew for every batch: ~4 ms of CPU
        # for 30 events, which every event of the batch waited for.
        await write_events(database, [sample_event("h-cached", n) for n in range(1, 8)])
        await OutboxRelay(database, js).relay_once()
        runner = consumer(database, js)
        await js.add_consumer(
            STREAM, ConsumerConfig(durable_name="test-effects", filter_subjects=SUBJECTS)
        )
        pull = await js.pull_subscribe_bind(durable="test-effects", stream=STREAM)
        messages = await pull.fetch(7, timeout=2)
        inbox_inserts: list[CacheStats] = []

        def note(
            _conn: Any, _cursor: Any, statement: str, _params: Any, context: Any, _many: bool
        ) -> None:
            if statement.startswith("INSERT INTO inbox"):
                inbox_inserts.append(context.cache_hit)

        sqlalchemy_event.listen(database.engine.sync_engine, "before_cursor_execute", note)
        try:
            await runner.handle_batch(messages[:3])
            await runner.handle_batch(messages[3:])  # a batch of another size
        finally:
            sqlalchemy_event.remove(database.engine.sync_engine, "before_cursor_execute", note)
            await pull.unsubscribe()
        assert inbox_inserts[1:] == [CacheStats.CACHE_HIT]
        assert sorted(seq for _, _, seq in await effects(database)) == list(range(1, 8))

    async def test_a_message_that_is_not_a_cloudevent_is_dead_lettered_at_once(
        self, database: Database, js: JetStreamContext
    ) -> None:
        await js.publish("bangfu.registry.household.changed.41.13.02", b"{not json")
        runner = consumer(database, js)
        await runner.start()
        try:
            dead = await _dead_letters(js, 1)
        finally:
            await runner.stop()
        assert dead[0].headers["Bangfu-Deliveries"] == "1"
        assert dead[0].headers["Bangfu-Reason"].startswith("malformed event")
        assert dead[0].data == b"{not json"


async def _subjects_in_stream(js: JetStreamContext) -> list[str]:
    """The CloudEvent subject of every message in the stream, in stream order."""
    info = await js.stream_info(STREAM)
    return [
        CloudEvent.from_json((await js.get_msg(STREAM, seq)).data or b"").subject
        for seq in range(info.state.first_seq, info.state.last_seq + 1)
    ]


async def _sequences_in_stream(js: JetStreamContext, aggregate: str) -> list[int]:
    """The sequence of each of `aggregate`'s events in the stream, in stream order."""
    info = await js.stream_info(STREAM)
    events = [
        CloudEvent.from_json((await js.get_msg(STREAM, seq)).data or b"")
        for seq in range(info.state.first_seq, info.state.last_seq + 1)
    ]
    return [event.sequence for event in events if event.subject == aggregate]


class FailsOnce:
    """A JetStream context whose first publish of one event fails or is never acknowledged."""

    def __init__(self, js: JetStreamContext, event_id: str, *, never_acked: bool = False):
        self._js = js
        self._event_id = event_id
        self._never_acked = never_acked  # else an error comes back
        self._failed = False

    async def publish_async(self, subject: str, payload: bytes, **options: Any) -> Any:
        if options["headers"]["Nats-Msg-Id"] == self._event_id and not self._failed:
            self._failed = True
            failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            if not self._never_acked:
                failed.set_exception(nats.js.errors.APIError(description="stream unavailable"))
            return failed
        return await self._js.publish_async(subject, payload, **options)


class Delayed:
    """A JetStream context whose publishes reach the server, or whose PubAcks come back, late;
    it counts its publishes by event id."""

    def __init__(
        self, js: JetStreamContext, *, publish_seconds: float = 0.0, ack_seconds: float = 0.0
    ):
        self._js = js
        self._publish_seconds = publish_seconds
        self._ack_seconds = ack_seconds
        self.published: list[str] = []

    async def publish_async(self, subject: str, payload: bytes, **options: Any) -> Any:
        self.published.append(options["headers"]["Nats-Msg-Id"])
        late: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        async def publish() -> None:
            await asyncio.sleep(self._publish_seconds)
            ack = await self._js.publish_async(subject, payload, **options)
            await asyncio.sleep(self._ack_seconds)
            late.set_result(await ack)

        asyncio.get_running_loop().create_task(publish())
        return late


async def _no_pending(js: JetStreamContext) -> bool:
    info = await js.consumer_info(STREAM, "test-effects")
    # Delivered twice (the redelivery) and nothing left unacknowledged.
    return info.num_pending == 0 and info.num_ack_pending == 0 and info.delivered.consumer_seq >= 2


async def _dead_letters(js: JetStreamContext, n: int) -> list[nats.aio.msg.Msg]:
    pull = await js.pull_subscribe(">", stream=DEAD_LETTER_STREAM)
    messages: list[nats.aio.msg.Msg] = []
    deadline = asyncio.get_running_loop().time() + 20
    while len(messages) < n and asyncio.get_running_loop().time() < deadline:
        try:
            messages += await pull.fetch(n - len(messages), timeout=1)
        except nats.errors.TimeoutError:
            continue
    assert len(messages) == n, f"expected {n} dead letters, got {len(messages)}"
    return messages


async def _has_messages(js: JetStreamContext, count: int) -> bool:
    return (await js.stream_info(STREAM)).state.messages >= count
