"""The hash-chained audit log, against SQLite or PostgreSQL (BANGFU_TEST_DATABASE_URL)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared import audit
from shared.audit import GENESIS_HASH, AuditRecord, ChainBreak, Profile
from shared.db import common_metadata, create_engine, write_together

T0 = datetime.datetime(2024, 1, 1, 8, 0, tzinfo=datetime.UTC)
Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture
async def audit_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An engine on a fresh database (SQLite file or a PostgreSQL schema) with the audit tables."""
    url = os.environ.get("BANGFU_TEST_DATABASE_URL") or f"sqlite+aiosqlite:///{tmp_path}/audit.db"
    schema = None if url.startswith("sqlite") else f"test_audit_{uuid.uuid4().hex[:12]}"
    if schema:
        await _run_on_plain_engine(url, f'CREATE SCHEMA "{schema}"')
    engine = create_engine(url, schema=schema)
    tables = [audit.audit_log, audit.audit_anchor]
    async with engine.begin() as connection:
        await connection.run_sync(lambda sync: common_metadata.create_all(sync, tables=tables))
    yield engine
    await engine.dispose()
    if schema:
        await _run_on_plain_engine(url, f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def sessions(audit_engine: AsyncEngine) -> Sessions:
    return async_sessionmaker(audit_engine, expire_on_commit=False)


async def _run_on_plain_engine(url: str, statement: str) -> None:
    engine = create_engine(url)
    async with engine.begin() as connection:
        await connection.execute(text(statement))
    await engine.dispose()


async def append_many(
    sessions: Sessions,
    count: int,
    *,
    profile: Profile = "intl",
    start: datetime.datetime = T0,
    step: datetime.timedelta = datetime.timedelta(minutes=1),
) -> list[AuditRecord]:
    """Append `count` records, one commit, at `start`, `start + step`, ..."""
    async with sessions() as session:
        records = [
            await audit.append(
                session,
                client_id="registry-app",
                action="household.read",
                target=f"household/{i}",
                outcome="success",
                purpose="复核 review",
                trace_id=f"trace-{i}",
                detail={"fields": ["name", "身份证"], "i": i},
                profile=profile,
                now=start + step * i,
            )
            for i in range(count)
        ]
        await session.commit()
    return records


# What another replica does: append three records to the chain at argv's url and schema.
APPEND_THREE = """
import asyncio, datetime, sys
from sqlalchemy.ext.asyncio import async_sessionmaker
from shared import audit
from shared.db import create_engine

async def main(url, schema):
    engine = create_engine(url, schema=schema or None)
    async with async_sessionmaker(engine)() as session:
        for i in range(3):
            await audit.append(
                session, client_id="replica-2", action="a", target=f"t/{i}", outcome="success",
                now=datetime.datetime.now(datetime.UTC),
            )
        await session.commit()
    await engine.dispose()

asyncio.run(main(*sys.argv[1:]))
"""


async def verify(sessions: Sessions, **kwargs: Any) -> list[ChainBreak]:
    async with sessions() as session:
        return await audit.verify(session, **kwargs)


async def execute(sessions: Sessions, statement: str) -> None:
    async with sessions() as session:
        await session.execute(text(statement))
        await session.commit()


async def stored_seqs(sessions: Sessions) -> list[int]:
    async with sessions() as session:
        result = await session.execute(select(audit.audit_log.c.seq).order_by("seq"))
        return list(result.scalars())


class TestAppend:
    async def test_records_are_numbered_from_1_and_chained_from_the_genesis_hash(
        self, sessions: Sessions
    ) -> None:
        first, second = await append_many(sessions, 2)

        assert (first.seq, second.seq) == (1, 2)
        assert first.prev_hash == GENESIS_HASH
        assert second.prev_hash == first.hash
        assert len(first.hash) == 64 and first.hash != second.hash

    async def test_the_stored_row_is_the_record_returned(self, sessions: Sessions) -> None:
        (record,) = await append_many(sessions, 1)

        async with sessions() as session:
            row = (await session.execute(select(audit.audit_log))).one()
        assert row.client_id == record.client_id == "registry-app"
        assert row.purpose == "复核 review"
        assert row.detail == record.detail == {"fields": ["name", "身份证"], "i": 0}
        assert row.hash == record.hash
        assert record.at == T0

    async def test_a_naive_time_is_refused(self, sessions: Sessions) -> None:
        async with sessions() as session:
            with pytest.raises(ValueError, match="timezone-aware"):
                await audit.append(
                    session,
                    client_id="c",
                    action="a",
                    target="t",
                    outcome="success",
                    now=datetime.datetime(2024, 1, 1),
                )

    async def test_an_unknown_outcome_is_refused(self, sessions: Sessions) -> None:
        async with sessions() as session:
            with pytest.raises(ValueError, match="outcome must be one of"):
                await audit.append(
                    session,
                    client_id="c",
                    action="a",
                    target="t",
                    outcome="maybe",  # type: ignore[arg-type]
                    now=T0,
                )

    async def test_twenty_concurrent_appenders_make_one_gap_free_chain(
        self, sessions: Sessions
    ) -> None:
        async def append_one(i: int) -> AuditRecord:
            async with sessions() as session:
                record = await audit.append(
                    session,
                    client_id=f"client-{i}",
                    action="person.read",
                    target=f"p/{i}",
                    outcome="success",
                    now=T0 + datetime.timedelta(seconds=i),
                )
                await asyncio.sleep(0.01)  # hold the chain while others queue for it
                await session.commit()
                return record

        records = await asyncio.gather(*(append_one(i) for i in range(20)))

        assert sorted(r.seq for r in records) == list(range(1, 21))
        assert await stored_seqs(sessions) == list(range(1, 21))
        assert await verify(sessions) == []

    async def test_records_appended_by_another_process_between_ours_make_one_chain(
        self, audit_engine: AsyncEngine, sessions: Sessions
    ) -> None:
        # Another replica: its own process, its own idea of the chain's head.
        await append_many(sessions, 2)
        url = audit_engine.url.render_as_string(hide_password=False)
        schema = audit_engine.sync_engine.get_execution_options().get("search_path") or ""
        replica = await asyncio.create_subprocess_exec(
            sys.executable, "-c", APPEND_THREE, url, schema, cwd=Path(__file__).parents[2]
        )
        assert await replica.wait() == 0

        ours = await append_many(sessions, 2, start=T0 + datetime.timedelta(hours=1))

        assert [r.seq for r in ours] == [6, 7]
        async with sessions() as session:
            rows = (await session.execute(select(audit.audit_log).order_by("seq"))).all()
        assert [row.client_id for row in rows] == ["registry-app"] * 2 + ["replica-2"] * 3 + [
            "registry-app"
        ] * 2
        assert ours[0].prev_hash == rows[4].hash
        assert await verify(sessions) == []

    async def test_an_append_rolled_back_leaves_the_next_chained_to_the_stored_head(
        self, sessions: Sessions
    ) -> None:
        (kept,) = await append_many(sessions, 1)
        async with sessions() as session:
            await audit.append(
                session, client_id="c", action="a", target="t", outcome="success", now=T0
            )
            await session.rollback()

        (record,) = await append_many(sessions, 1)

        assert (record.seq, record.prev_hash) == (2, kept.hash)
        assert await verify(sessions) == []

    async def test_a_detail_keeps_the_numbers_it_was_hashed_with(self, sessions: Sessions) -> None:
        # A JSONB round trip would give 1e16 back as 10000000000000000, a hash that no longer
        # verifies.
        detail = {"large": 1e16, "small": 1e-7, "tenth": 0.1, "big_int": 2**62, "zero": -0.0}
        async with sessions() as session:
            record = await audit.append(
                session,
                client_id="c",
                action="a",
                target="t",
                outcome="success",
                detail=detail,
                now=T0,
            )
            await session.commit()

        async with sessions() as session:
            row = (await session.execute(select(audit.audit_log))).one()
        assert row.detail == record.detail == detail
        assert [type(row.detail[k]) for k in ("large", "big_int")] == [float, int]
        assert await verify(sessions) == []


class TestAppendMany:
    """`audit.append_many`: one record per target under one lock and one statement, chained
    exactly as `append` would chain them one by one."""

    async def test_one_record_per_target_chained_after_the_head_as_stored(
        self, sessions: Sessions
    ) -> None:
        (first,) = await append_many(sessions, 1)
        fields: dict[str, Any] = {
            "client_id": "service:benefits",
            "action": "household.pii_read",
            "outcome": "success",
            "purpose": "救助测算",
            "trace_id": "trace-b",
            "detail": {"fields": ["members.birth_date"]},
            "now": T0 + datetime.timedelta(hours=1),
        }
        async with sessions() as session:
            many = await audit.append_many(session, targets=["h-1", "h-2", "h-3"], **fields)
            await session.commit()
        assert [r.seq for r in many] == [2, 3, 4]
        assert many[0].prev_hash == first.hash
        assert [r.prev_hash for r in many[1:]] == [r.hash for r in many[:-1]]
        async with sessions() as session:
            rows = (await session.execute(select(audit.audit_log).order_by("seq"))).all()
        assert [(row.seq, row.target, row.hash, row.prev_hash) for row in rows[1:]] == [
            (r.seq, r.target, r.hash, r.prev_hash) for r in many
        ]
        assert await verify(sessions) == []
        assert len({r.hash for r in many}) == 3

    async def test_the_chain_made_by_append_many_matches_appends_one_by_one(
        self, sessions: Sessions
    ) -> None:
        fields: dict[str, Any] = {
            "client_id": "c",
            "action": "a",
            "outcome": "failure",
            "purpose": None,
            "detail": {"n": 1},
            "now": T0,
        }
        async with sessions() as session:
            many = await audit.append_many(session, targets=["x", "y"], **fields)
            await session.rollback()
        async with sessions() as session:
            single = [await audit.append(session, target=t, **fields) for t in ("x", "y")]
            await session.commit()
        assert many == single

    async def test_no_targets_write_nothing(self, sessions: Sessions) -> None:
        async with sessions() as session:
            assert (
                await audit.append_many(
                    session, client_id="c", action="a", targets=[], outcome="success", now=T0
                )
                == []
            )
            await session.commit()
        assert await stored_seqs(sessions) == []

    async def test_a_target_too_long_refuses_the_whole_batch(self, sessions: Sessions) -> None:
        async with sessions() as session:
            with pytest.raises(ValueError, match="target is longer than 200"):
                await audit.append_many(
                    session,
                    client_id="c",
                    action="a",
                    targets=["ok", "x" * 201],
                    outcome="success",
                    now=T0,
                )
            await session.commit()
        assert await stored_seqs(sessions) == []


class TestVerify:
    async def test_a_chain_of_50_appends_is_intact(self, sessions: Sessions) -> None:
        await append_many(sessions, 50)

        assert await verify(sessions) == []
        assert await verify(sessions, chunk_size=7) == []

    async def test_an_empty_log_is_intact(self, sessions: Sessions) -> None:
        assert await verify(sessions) == []

    async def test_a_record_edited_in_place_is_reported_as_edited_at_its_seq(
        self, sessions: Sessions
    ) -> None:
        await append_many(sessions, 50)
        await execute(sessions, "UPDATE audit_log SET target = 'household/other' WHERE seq = 17")

        breaks = await verify(sessions)

        assert [(b.seq, b.kind) for b in breaks] == [(17, "edited")]

    async def test_a_deleted_middle_record_is_reported_as_deleted_at_its_seq(
        self, sessions: Sessions
    ) -> None:
        await append_many(sessions, 50)
        await execute(sessions, "DELETE FROM audit_log WHERE seq = 25")

        breaks = await verify(sessions)

        assert [(b.seq, b.kind) for b in breaks] == [(25, "deleted")]
        assert "25 are missing" in breaks[0].detail

    async def test_a_deletion_on_a_chunk_boundary_is_found(self, sessions: Sessions) -> None:
        await append_many(sessions, 30)
        await execute(sessions, "DELETE FROM audit_log WHERE seq IN (14, 15)")

        breaks = await verify(sessions, chunk_size=7)

        assert [(b.seq, b.kind) for b in breaks] == [(14, "deleted")]
        assert "14 to 15" in breaks[0].detail

    async def test_deleting_the_oldest_records_without_a_purge_is_reported(
        self, sessions: Sessions
    ) -> None:
        await append_many(sessions, 10)
        await execute(sessions, "DELETE FROM audit_log WHERE seq <= 3")

        assert [(b.seq, b.kind) for b in await verify(sessions)] == [(1, "deleted")]

    async def test_a_renumbered_chain_after_a_deletion_is_reported(
        self, sessions: Sessions
    ) -> None:
        await append_many(sessions, 10)
        await execute(sessions, "DELETE FROM audit_log WHERE seq = 5")
        await execute(sessions, "UPDATE audit_log SET seq = seq - 1 WHERE seq > 5")

        breaks = await verify(sessions)

        assert (5, "deleted") in [(b.seq, b.kind) for b in breaks]

    async def test_a_forged_anchor_hiding_removed_records_is_reported(
        self, sessions: Sessions
    ) -> None:
        records = await append_many(sessions, 10)
        await execute(sessions, "DELETE FROM audit_log WHERE seq <= 4")
        await execute(
            sessions,
            "INSERT INTO audit_anchor (id, seq, hash, purged_at) "
            f"VALUES (1, 4, '{records[3].hash}', '2024-01-02 00:00:00')",
        )

        assert [(b.seq, b.kind) for b in await verify(sessions)] == [(4, "deleted")]

    async def test_a_chain_verified_with_the_other_profile_is_reported_edited(
        self, sessions: Sessions
    ) -> None:
        await append_many(sessions, 3, profile="gm")

        breaks = await verify(sessions, profile="intl")

        assert [(b.seq, b.kind) for b in breaks] == [(1, "edited"), (2, "edited"), (3, "edited")]


class TestProfiles:
    async def test_intl_and_gm_hash_the_same_content_differently(self, tmp_path: Path) -> None:
        unsigned = {
            "seq": 1,
            "at": T0,
            "client_id": "c",
            "action": "a",
            "target": "t",
            "outcome": "success",
            "purpose": None,
            "trace_id": None,
            "detail": {},
            "prev_hash": GENESIS_HASH,
        }

        intl = audit.record_hash(unsigned, profile="intl")
        gm = audit.record_hash(unsigned, profile="gm")

        assert intl != gm
        assert len(intl) == len(gm) == 64

    async def test_the_sha256_hash_is_over_the_canonical_json(self) -> None:
        import hashlib

        unsigned = {
            "seq": 1,
            "at": T0,
            "client_id": "c",
            "action": "a",
            "target": "区",
            "outcome": "success",
            "purpose": None,
            "trace_id": None,
            "detail": {"b": 1, "a": 2},
            "prev_hash": GENESIS_HASH,
        }
        canonical = (
            '{"action":"a","at":"2024-01-01T08:00:00.000000Z","client_id":"c",'
            '"detail":{"a":2,"b":1},"outcome":"success","prev_hash":"' + GENESIS_HASH + '",'
            '"purpose":null,"seq":1,"target":"区","trace_id":null}'
        ).encode()

        assert audit.canonical_json(unsigned) == canonical
        assert audit.record_hash(unsigned, profile="intl") == hashlib.sha256(canonical).hexdigest()

    @pytest.mark.parametrize("profile", ["intl", "gm"])
    async def test_a_chained_record_hashes_its_whole_canonical_json(self, profile: Profile) -> None:
        """The chain writes the detail's JSON once and puts it in the record's: the hash is
        still the one of the whole record's canonical JSON, whatever the fields around the
        detail hold (here text that looks like the record's own keys and separators)."""
        entry = audit.AuditEntry(
            client_id='c","detail":{},"outcome":"',
            action='{"a":1},"',
            target='"}',
            outcome="success",
            at=T0,
            purpose='"detail":null',
            trace_id=None,
            detail={"z": [1.5, 1e16, {"b": "区", "a": None}], "a": T0},
        )

        (record,) = audit._chained([entry], audit._GENESIS, profile=profile)

        unsigned = {key: value for key, value in record.__dict__.items() if key != "hash"}
        assert record.hash == audit.record_hash(unsigned, profile=profile)
        assert record.detail == {
            "a": "2024-01-01T08:00:00.000000Z",
            "z": [1.5, 1e16, {"a": None, "b": "区"}],
        }

    async def test_a_detail_keyed_by_numbers_hashes_as_it_reads_back(
        self, sessions: Sessions
    ) -> None:
        """Numbers as keys are sorted as numbers when written (2 before 10) and as text once
        read back ("10" before "2"): the hash is of what a read gives back, so the chain
        still verifies."""
        async with sessions() as session:
            await audit.append(
                session,
                client_id="c",
                action="a",
                target="t",
                outcome="success",
                detail={"by_month": {2: "feb", 10: "oct"}, "at": {1.5: True}},
                now=T0,
            )
            await session.commit()

        assert await verify(sessions) == []

    @pytest.mark.parametrize("profile", ["intl", "gm"])
    async def test_a_chain_in_either_profile_verifies_and_detects_edits(
        self, sessions: Sessions, profile: Profile
    ) -> None:
        await append_many(sessions, 5, profile=profile)
        assert await verify(sessions, profile=profile) == []

        await execute(sessions, "UPDATE audit_log SET outcome = 'failure' WHERE seq = 2")

        assert [(b.seq, b.kind) for b in await verify(sessions, profile=profile)] == [(2, "edited")]

    async def test_the_two_profiles_chain_the_same_records_to_different_hashes(
        self, sessions: Sessions
    ) -> None:
        intl = await append_many(sessions, 1, profile="intl")
        await execute(sessions, "DELETE FROM audit_log")
        gm = await append_many(sessions, 1, profile="gm")

        assert intl[0].hash != gm[0].hash


class TestPurge:
    async def test_only_records_older_than_the_retention_go_and_the_chain_still_verifies(
        self, sessions: Sessions
    ) -> None:
        day = datetime.timedelta(days=1)
        records = await append_many(sessions, 30, step=day)  # T0, T0 + 1 day, ... T0 + 29 days
        now = T0 + 200 * day  # cutoff T0 + 20 days: records 1-20 are older, 21-30 are not

        async with sessions() as session:
            removed = await audit.purge(session, retention_days=180, now=now, client_id="ops")
            await session.commit()

        assert removed == 20
        assert await stored_seqs(sessions) == list(range(21, 32))
        assert await verify(sessions) == []
        async with sessions() as session:
            anchor = (await session.execute(select(audit.audit_anchor))).one()
            purged = (
                await session.execute(select(audit.audit_log).where(audit.audit_log.c.seq == 31))
            ).one()
        assert (anchor.seq, anchor.hash) == (20, records[19].hash)
        assert purged.action == "audit.purged"
        assert purged.client_id == "ops"
        assert purged.detail["removed"] == 20
        assert purged.detail["up_to_seq"] == 20

    async def test_appends_after_a_purge_continue_the_chain(self, sessions: Sessions) -> None:
        day = datetime.timedelta(days=1)
        await append_many(sessions, 5, step=day)
        async with sessions() as session:
            await audit.purge(session, retention_days=1, now=T0 + 30 * day, client_id="ops")
            await session.commit()
        await execute(sessions, "DELETE FROM audit_log WHERE seq = 6")  # even the purge record

        later = await append_many(sessions, 2, start=T0 + 31 * day)

        assert [r.seq for r in later] == [6, 7]
        assert await verify(sessions) == [
            ChainBreak(
                5,
                "deleted",
                "the anchor at seq 5 is not vouched for by any audit.purged record, "
                "so records up to it may have been removed",
            )
        ]

    async def test_purging_everything_anchors_the_next_record(self, sessions: Sessions) -> None:
        day = datetime.timedelta(days=1)
        records = await append_many(sessions, 5, step=day)

        async with sessions() as session:
            removed = await audit.purge(
                session, retention_days=1, now=T0 + 30 * day, client_id="ops"
            )
            await session.commit()

        async with sessions() as session:
            purged = (await session.execute(select(audit.audit_log))).one()
        assert removed == 5
        assert (purged.seq, purged.prev_hash) == (6, records[4].hash)
        assert await verify(sessions) == []

    async def test_a_second_purge_moves_the_anchor_again(self, sessions: Sessions) -> None:
        day = datetime.timedelta(days=1)
        await append_many(sessions, 10, step=day)
        for now, retention in [(T0 + 15 * day, 10), (T0 + 40 * day, 10)]:
            async with sessions() as session:
                await audit.purge(session, retention_days=retention, now=now, client_id="ops")
                await session.commit()

        # The first purge removed 1-5 and wrote 11; the second removes 6-11 and writes 12.
        assert await stored_seqs(sessions) == [12]
        assert await verify(sessions) == []

    async def test_nothing_to_purge_still_records_the_purge(self, sessions: Sessions) -> None:
        await append_many(sessions, 3)

        async with sessions() as session:
            removed = await audit.purge(session, retention_days=180, now=T0, client_id="ops")
            await session.commit()

        assert removed == 0
        assert await stored_seqs(sessions) == [1, 2, 3, 4]
        assert await verify(sessions) == []

    async def test_an_older_record_behind_a_younger_one_is_kept(self, sessions: Sessions) -> None:
        day = datetime.timedelta(days=1)
        await append_many(sessions, 2, start=T0, step=day)
        await append_many(sessions, 1, start=T0 + 100 * day)  # a clock running fast
        await append_many(sessions, 1, start=T0 + 3 * day)

        async with sessions() as session:
            removed = await audit.purge(
                session, retention_days=10, now=T0 + 50 * day, client_id="ops"
            )
            await session.commit()

        assert removed == 2
        assert await stored_seqs(sessions) == [3, 4, 5]
        assert await verify(sessions) == []

    @pytest.mark.parametrize("retention_days", [0, -1])
    async def test_a_retention_under_one_day_is_refused(
        self, sessions: Sessions, retention_days: int
    ) -> None:
        await append_many(sessions, 3)

        async with sessions() as session:
            with pytest.raises(ValueError, match="at least 1"):
                await audit.purge(
                    session,
                    retention_days=retention_days,
                    now=T0 + datetime.timedelta(days=9),
                    client_id="ops",
                )
        assert await stored_seqs(sessions) == [1, 2, 3]


CHECKPOINT_KEY = b"a checkpoint key of thirty-two bytes or more"


async def take_checkpoint(sessions: Sessions, path: Path, **kwargs: Any) -> audit.Checkpoint:
    async with sessions() as session:
        checkpoint = await audit.head_checkpoint(session, now=T0)
    audit.write_checkpoint(path, checkpoint, key=CHECKPOINT_KEY, **kwargs)
    return checkpoint


class TestCheckpoint:
    """The chain's head, signed and kept outside the database: deleting the newest shows."""

    async def test_an_untouched_chain_verifies_against_its_checkpoint(
        self, sessions: Sessions, tmp_path: Path
    ) -> None:
        await append_many(sessions, 10)
        await take_checkpoint(sessions, tmp_path / "checkpoint.json")

        checkpoint = audit.read_checkpoint(tmp_path / "checkpoint.json", key=CHECKPOINT_KEY)

        assert (checkpoint.seq, checkpoint.at) == (10, T0)
        assert await verify(sessions, checkpoint=checkpoint) == []

    async def test_the_newest_records_deleted_after_a_checkpoint_are_reported_missing(
        self, sessions: Sessions, tmp_path: Path
    ) -> None:
        await append_many(sessions, 10)
        checkpoint = await take_checkpoint(sessions, tmp_path / "checkpoint.json")
        await execute(sessions, "DELETE FROM audit_log WHERE seq >= 8")

        assert await verify(sessions) == []  # the chain alone cannot tell
        breaks = await verify(sessions, checkpoint=checkpoint)

        assert [(b.seq, b.kind) for b in breaks] == [(8, "deleted")]
        assert breaks[0].detail.startswith("records 8 to 10 are missing")

    async def test_the_newest_records_replaced_by_new_appends_are_reported(
        self, sessions: Sessions, tmp_path: Path
    ) -> None:
        await append_many(sessions, 10)
        checkpoint = await take_checkpoint(sessions, tmp_path / "checkpoint.json")
        await execute(sessions, "DELETE FROM audit_log WHERE seq >= 9")
        await append_many(sessions, 3, start=T0 + datetime.timedelta(days=1))

        breaks = await verify(sessions, checkpoint=checkpoint)

        assert [(b.seq, b.kind) for b in breaks] == [(10, "deleted")]
        assert breaks[0].detail.startswith("record 10 is not the record the checkpoint of")

    async def test_a_checkpoint_edited_by_hand_is_refused(
        self, sessions: Sessions, tmp_path: Path
    ) -> None:
        await append_many(sessions, 10)
        path = tmp_path / "checkpoint.json"
        await take_checkpoint(sessions, path)
        path.write_text(path.read_text().replace('"seq":10', '"seq":7'))

        with pytest.raises(audit.CheckpointError, match="signature"):
            audit.read_checkpoint(path, key=CHECKPOINT_KEY)
        with pytest.raises(audit.CheckpointError, match="signature"):
            audit.read_checkpoint(path, key=b"another key of thirty-two bytes or more")

    async def test_records_purged_up_to_the_checkpoint_are_not_missing(
        self, sessions: Sessions, tmp_path: Path
    ) -> None:
        await append_many(sessions, 10)
        checkpoint = await take_checkpoint(sessions, tmp_path / "checkpoint.json")
        async with sessions() as session:
            await audit.purge(
                session,
                retention_days=1,
                now=T0 + datetime.timedelta(days=30),
                client_id="ops",
            )
            await session.commit()

        assert await verify(sessions, checkpoint=checkpoint) == []

    async def test_a_checkpoint_never_moves_back(self, sessions: Sessions, tmp_path: Path) -> None:
        """Two replicas write the same file: one that read an older head leaves it alone."""
        path = tmp_path / "checkpoint.json"
        await append_many(sessions, 10)
        newer = await take_checkpoint(sessions, path)
        older = audit.Checkpoint(seq=4, hash="0" * 64, at=T0)

        audit.write_checkpoint(path, older, key=CHECKPOINT_KEY)

        assert audit.read_checkpoint(path, key=CHECKPOINT_KEY) == newer


class TestAppendEntries:
    """`audit.append_entries`: records that differ in every field, chained in one statement as
    `append` chains them one by one (the verifier audits a group of reports so)."""

    async def test_entries_of_their_own_chain_as_appends_one_by_one_would(
        self, sessions: Sessions
    ) -> None:
        entries = [
            audit.AuditEntry(
                client_id=f"client-{n}",
                action="verification.report",
                target=f"v-{n}",
                outcome="success" if n % 2 else "failure",
                at=T0 + datetime.timedelta(seconds=n),
                purpose=f"核对 {n}",
                trace_id=None,
                detail={"report_version": n, "exchanges": [{"n": n}]},
            )
            for n in range(1, 4)
        ]
        async with sessions() as session:
            together = await audit.append_entries(session, entries)
            await session.commit()
        assert [(r.target, r.client_id, r.detail["report_version"]) for r in together] == [
            ("v-1", "client-1", 1),
            ("v-2", "client-2", 2),
            ("v-3", "client-3", 3),
        ]
        assert await verify(sessions) == []
        async with sessions() as session:
            await session.execute(audit.audit_log.delete())
            one_by_one = [
                await audit.append(
                    session,
                    client_id=e.client_id,
                    action=e.action,
                    target=e.target,
                    outcome=e.outcome,
                    purpose=e.purpose,
                    detail=e.detail,
                    now=e.at,
                )
                for e in entries
            ]
            await session.rollback()
        assert together == one_by_one


class TestChainedInCall:
    """`audit.chained_in_call`: the records `write_together` makes in its call to SQLite are
    those `append_entries` chains, after records, after a purge's anchor alone, or first."""

    ENTRIES = [
        audit.AuditEntry(
            client_id="verification",
            action="verification.report",
            target=f"v-{n}",
            outcome="success",
            at=T0 + datetime.timedelta(seconds=n),
            purpose="核对",
            trace_id=None,
            detail={"report_version": 1, "exchanges": [{"n": n}]},
        )
        for n in (1, 2)
    ]

    @pytest.fixture(autouse=True)
    def sqlite_only(self) -> None:
        if os.environ.get("BANGFU_TEST_DATABASE_URL", "sqlite").startswith("postgresql"):
            pytest.skip("rows made in the call to the driver: SQLite's")

    async def made_and_appended(self, sessions: Sessions) -> tuple[list[Any], list[AuditRecord]]:
        """The rows written in that call, and `append_entries`' records, both rolled back."""
        async with sessions() as session:
            before = await session.execute(select(func.count()).select_from(audit.audit_log))
            count = before.scalar_one()
            await write_together(session, [(audit.audit_log, audit.chained_in_call(self.ENTRIES))])
            made = (
                await session.execute(
                    select(audit.audit_log).order_by(audit.audit_log.c.seq).offset(count)
                )
            ).all()
            await session.rollback()
            appended = await audit.append_entries(session, self.ENTRIES)
            await session.rollback()
        # SQLite gives its times back without their zone (UTC).
        naive = [dataclasses.replace(r, at=r.at.replace(tzinfo=None)) for r in appended]
        return [AuditRecord(**row._mapping) for row in made], naive

    async def test_after_records(self, sessions: Sessions) -> None:
        records = await append_many(sessions, 3)
        made, appended = await self.made_and_appended(sessions)
        assert made == appended
        assert (made[0].seq, made[0].prev_hash) == (4, records[2].hash)

    async def test_after_a_purge_that_left_only_its_anchor(self, sessions: Sessions) -> None:
        records = await append_many(sessions, 3)
        await execute(
            sessions,
            "INSERT INTO audit_anchor (id, seq, hash, purged_at) "
            f"VALUES (1, 3, '{records[2].hash}', '2024-01-02 00:00:00')",
        )
        await execute(sessions, "DELETE FROM audit_log")
        made, appended = await self.made_and_appended(sessions)
        assert made == appended
        assert (made[0].seq, made[0].prev_hash) == (4, records[2].hash)

    async def test_first(self, sessions: Sessions) -> None:
        made, appended = await self.made_and_appended(sessions)
        assert made == appended
        assert (made[0].seq, made[0].prev_hash, made[1].prev_hash) == (
            1,
            GENESIS_HASH,
            made[0].hash,
        )
        async with sessions() as session:
            await write_together(
                session, [(audit.audit_log, audit.chained_in_call(self.ENTRIES))], commit=True
            )
            await session.commit()
        assert await verify(sessions) == []

    def test_an_entry_is_checked_when_given(self) -> None:
        wrong = dataclasses.replace(self.ENTRIES[0], outcome="maybe")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="outcome"):
            audit.chained_in_call([wrong])


class TestAppendWith:
    """`audit.append_with` (PostgreSQL): a change's statement that appends its records, both
    committed by the one statement or neither."""

    @pytest.fixture(autouse=True)
    def postgresql_only(self) -> None:
        if not os.environ.get("BANGFU_TEST_DATABASE_URL", "sqlite").startswith("postgresql"):
            pytest.skip("a statement ending in a PL/pgSQL function: PostgreSQL's")

    @pytest.fixture
    async def notes(self, audit_engine: AsyncEngine) -> AsyncIterator[Sessions]:
        """Sessions whose statements commit on their own, and a table for a change to write."""
        async with audit_engine.begin() as connection:
            await connection.execute(text("CREATE TABLE note (id serial PRIMARY KEY, said text)"))
        yield async_sessionmaker(
            audit_engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False
        )

    NOTE = audit.APPEND_CALL.add_cte(
        text("INSERT INTO note (said) VALUES (:said) RETURNING id").columns().cte("noted")
    )

    @staticmethod
    def entry(n: int) -> audit.AuditEntry:
        return audit.AuditEntry("c", "note.write", f"note/{n}", "success", T0, detail={"n": n})

    async def said(self, sessions: Sessions) -> list[str]:
        async with sessions() as session:
            return list(
                (await session.execute(text("SELECT said FROM note ORDER BY id"))).scalars()
            )

    async def test_the_change_and_its_records_are_written_by_one_statement(
        self, sessions: Sessions, notes: Sessions
    ) -> None:
        async with notes() as session:
            first, first_row = await audit.append_with(
                session, self.NOTE, {"said": "一"}, [self.entry(1), self.entry(2)]
            )
            (second,), second_row = await audit.append_with(
                session, self.NOTE, {"said": "二"}, [self.entry(3)]
            )

        # The statement's row: the append's head, each chained to the one before.
        assert (first_row[0], second_row[0]) == (0, 2)
        assert [r.seq for r in first] == [1, 2]
        assert (second.seq, second.prev_hash) == (3, first[1].hash)
        assert await self.said(notes) == ["一", "二"]
        assert await stored_seqs(sessions) == [1, 2, 3]
        assert await verify(sessions) == []

    async def test_after_another_process_appended_the_change_is_undone_and_run_again(
        self, audit_engine: AsyncEngine, sessions: Sessions, notes: Sessions
    ) -> None:
        async with notes() as session:  # this process knows the head: seq 1
            await audit.append_with(session, self.NOTE, {"said": "一"}, [self.entry(1)])
        url = audit_engine.url.render_as_string(hide_password=False)
        schema = audit_engine.sync_engine.get_execution_options().get("search_path") or ""
        replica = await asyncio.create_subprocess_exec(
            sys.executable, "-c", APPEND_THREE, url, schema, cwd=Path(__file__).parents[2]
        )
        assert await replica.wait() == 0  # the head is now seq 4, written there

        async with notes() as session:
            (record,), _ = await audit.append_with(
                session, self.NOTE, {"said": "二"}, [self.entry(2)]
            )

        # The first try, chained to seq 1, failed and took its note with it: "二" once.
        assert await self.said(notes) == ["一", "二"]
        async with sessions() as session:
            rows = (await session.execute(select(audit.audit_log).order_by("seq"))).all()
        assert [(row.seq, row.client_id) for row in rows] == [
            (1, "c"),
            (2, "replica-2"),
            (3, "replica-2"),
            (4, "replica-2"),
            (5, "c"),
        ]
        assert (record.seq, record.prev_hash) == (5, rows[3].hash)
        assert await verify(sessions) == []

    async def test_in_a_transaction_it_is_refused(
        self, sessions: Sessions, notes: Sessions
    ) -> None:
        # There, a failed try would undo the transaction's earlier statements too.
        async with sessions() as session:
            with pytest.raises(ValueError, match="unit of one write"):
                await audit.append_with(session, self.NOTE, {"said": "一"}, [self.entry(1)])
        assert await self.said(notes) == []
