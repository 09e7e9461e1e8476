"""The append-only, hash-chained audit log: who did what, to what, why and when."""

from __future__ import annotations

import datetime
import hmac
import json
import os
import secrets
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from sqlalchemy import (
    DDL,
    JSON,
    URL,
    BigInteger,
    Column,
    DateTime,
    Integer,
    Row,
    String,
    Table,
    bindparam,
    event,
    func,
    select,
    text,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Executable

from shared.crypto import digest, hash_algorithm
from shared.db import common_metadata, rows_param

Profile = Literal["intl", "gm"]
Outcome = Literal["success", "failure"]
BreakKind = Literal["edited", "deleted"]

GENESIS_HASH = "0" * 64
PURGED_ACTION = "audit.purged"
# Any fixed key will do; every appender in a database must use the same one ("bangfu.a").
_ADVISORY_LOCK_KEY = 0x62616E6766752E61
_OUTCOMES = ("success", "failure")

audit_log = Table(
    "audit_log",
    common_metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("at", DateTime(timezone=True), nullable=False, index=True),
    Column("client_id", String(200), nullable=False),
    Column("action", String(100), nullable=False),
    Column("target", String(200), nullable=False),
    Column("outcome", String(20), nullable=False),
    Column("purpose", String(500), nullable=True),
    Column("trace_id", String(64), nullable=True),
    Column("detail", JSON, nullable=False, default=lambda: {}),
    Column("prev_hash", String(128), nullable=False),
    Column("hash", String(128), nullable=False),
)

audit_anchor = Table(
    "audit_anchor",
    common_metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(128), nullable=False),
    Column("purged_at", DateTime(timezone=True), nullable=False),
)

_HASHED_FIELDS = (
    "seq",
    "at",
    "client_id",
    "action",
    "target",
    "outcome",
    "purpose",
    "trace_id",
    "detail",
    "prev_hash",
)
# The hashed fields on either side of "detail" in sorted order (`_record_hash`); neither is empty.
_HASHED_BEFORE_DETAIL = tuple(key for key in sorted(_HASHED_FIELDS) if key < "detail")
_HASHED_AFTER_DETAIL = tuple(key for key in sorted(_HASHED_FIELDS) if key > "detail")
_MAX_LENGTHS = {"client_id": 200, "action": 100, "target": 200, "purpose": 500, "trace_id": 64}


@dataclass(frozen=True)
class AuditRecord:
    """One row of the audit log."""

    seq: int
    at: datetime.datetime
    client_id: str
    action: str
    target: str
    outcome: Outcome
    purpose: str | None
    trace_id: str | None
    detail: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class ChainBreak:
    """A place where the chain shows a record was edited or deleted."""

    seq: int
    kind: BreakKind
    detail: str


@dataclass(frozen=True)
class _Link:
    seq: int
    hash: str


@dataclass(frozen=True)
class Checkpoint:
    """The chain's head (newest seq and hash) as seen at `at`, kept signed outside the database:
    the chain itself cannot show that its newest records were deleted, a checkpoint can."""

    seq: int
    hash: str
    at: datetime.datetime


class CheckpointError(Exception):
    """A checkpoint file that is unreadable or whose signature does not verify."""


@dataclass(frozen=True)
class AuditEntry:
    """A record to append: what `append` takes, for `append_entries` to chain with others."""

    client_id: str
    action: str
    target: str
    outcome: Outcome
    at: datetime.datetime
    purpose: str | None = None
    trace_id: str | None = None
    detail: Mapping[str, Any] | None = None


async def append(
    session: AsyncSession,
    *,
    client_id: str,
    action: str,
    target: str,
    outcome: Outcome,
    purpose: str | None = None,
    trace_id: str | None = None,
    detail: Mapping[str, Any] | None = None,
    profile: Profile = "intl",
    now: datetime.datetime,
) -> AuditRecord:
    """Append a record chained to the last one; the caller's unit of work commits it."""
    entry = AuditEntry(client_id, action, target, outcome, now, purpose, trace_id, detail)
    (record,) = await append_entries(session, [entry], profile=profile)
    return record


async def append_many(
    session: AsyncSession,
    *,
    client_id: str,
    action: str,
    targets: Sequence[str],
    outcome: Outcome,
    purpose: str | None = None,
    trace_id: str | None = None,
    detail: Mapping[str, Any] | None = None,
    profile: Profile = "intl",
    now: datetime.datetime,
) -> list[AuditRecord]:
    """One record per target, all alike but for the target (a batch read audited household
    by household): see `append_entries`."""
    entries = [
        AuditEntry(client_id, action, target, outcome, now, purpose, trace_id, detail)
        for target in targets
    ]
    return await append_entries(session, entries, profile=profile)


async def append_entries(
    session: AsyncSession, entries: Sequence[AuditEntry], *, profile: Profile = "intl"
) -> list[AuditRecord]:
    """The entries chained in order, as appending them one by one would chain them, under one
    lock, one read of the chain's head and one statement (a lock, a query and an insert per
    record was most of what auditing a batch cost).

    On PostgreSQL in one round trip, `audit_append` (`APPEND_FUNCTION`): the records are
    chained to the head this process last wrote, and the function, under the chain's lock,
    inserts them if that is still the head or else says what the head is, for a second call
    (another replica wrote since, or this process's last append rolled back). The lock, the
    head's read and the insert were three round trips (bench/verification.py, stop 42)."""
    if not entries:
        return []
    _check_entries(entries)
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        # SQLite needs no lock: the engine opens every transaction with BEGIN IMMEDIATE.
        records = _chained(entries, await _last_link(session), profile=profile)
        await session.execute(audit_log.insert(), [record.__dict__ for record in records])
        return records
    chain = _chain_of(session)
    head = _heads.get(chain, _GENESIS)
    for _ in range(2):
        records = _chained(entries, head, profile=profile)
        params = {
            "seq": head.seq,
            "hash": head.hash,
            "records": rows_param(audit_log.c, [record.__dict__ for record in records]),
        }
        found = _Link(*(await session.execute(_APPEND, params)).one())
        if found == head:
            _heads[chain] = _Link(seq=records[-1].seq, hash=records[-1].hash)
            return records
        head = found
    raise RuntimeError("the audit chain's head moved while its lock was held")


async def append_with(
    session: AsyncSession,
    statement: Executable,
    parameters: Mapping[str, Any],
    entries: Sequence[AuditEntry],
    *,
    profile: Profile = "intl",
) -> tuple[list[AuditRecord], Row[Any]]:
    """PostgreSQL, in a unit of one write (`Database.unit_of_work(one_write=True)`): execute
    `statement`, a change that ends in `APPEND_CALL` (`APPEND_CALL.add_cte(...)`, with more
    columns if need be), with the entries chained to the head this process last wrote; the
    records and the statement's row. The change and its records commit
    together in one round trip, where the change then `append_entries` took four: BEGIN, the
    change, the append, COMMIT (bench/verification.py, stop 44).

    If the head moved (another replica appended, or this process has not appended yet), the
    function fails the statement, which undoes the change with it, and the statement is run
    again chained to the head the failure named; another replica may move it again meanwhile,
    so up to `_TRIES` times."""
    if not entries:
        raise ValueError("a change appended with its records needs records")
    if session.get_bind().get_execution_options().get("isolation_level") != "AUTOCOMMIT":
        # In a transaction, the failed statement would take the unit's earlier ones with it.
        raise ValueError("append_with runs in a unit of one write, whose statements commit")
    _check_entries(entries)
    chain = _chain_of(session)
    head = _heads.get(chain, _GENESIS)
    for _ in range(_TRIES):
        records = _chained(entries, head, profile=profile)
        appended = {
            "audit_seq": head.seq,
            "audit_hash": head.hash,
            "audit_records": rows_param(audit_log.c, [record.__dict__ for record in records]),
        }
        try:
            row = (await session.execute(statement, {**parameters, **appended})).one()
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) != HEAD_MOVED:
                raise
            await session.rollback()  # the session's; the statement undid itself
            seq, hash_ = str(getattr(exc.orig, "detail", "")).split(" ")
            head = _Link(seq=int(seq), hash=hash_)
            continue
        _heads[chain] = _Link(seq=records[-1].seq, hash=records[-1].hash)
        return records, row
    raise RuntimeError(f"the audit chain's head moved at each of {_TRIES} tries")


def _chain_of(session: AsyncSession) -> tuple[URL, str | None]:
    """The chain a session appends to: its database's, in its schema."""
    bind = session.get_bind()
    return (bind.engine.url, bind.get_execution_options().get("search_path"))


def chained_in_call(
    entries: Sequence[AuditEntry], *, profile: Profile = "intl"
) -> Callable[[sqlite3.Cursor], list[dict[str, Any]]]:
    """SQLite: `append_entries` for `shared.db.write_together`, which makes the records in its
    call to the driver, in that call's transaction: the head is read there, under the write lock
    the transaction holds from its first statement, rather than in a statement of its own (a
    wait for the thread and for SQLAlchemy's statement machinery: 1.3 ms of a household's
    report, bench/verification.py). The entries are checked now."""
    _check_entries(entries)

    def make(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
        if not entries:
            return []
        row = cursor.execute(_HEAD_SQL).fetchone() or cursor.execute(_ANCHOR_SQL).fetchone()
        last = _Link(seq=row[0], hash=row[1]) if row else _GENESIS
        return [record.__dict__ for record in _chained(entries, last, profile=profile)]

    return make


def _check_entries(entries: Sequence[AuditEntry]) -> None:
    for entry in entries:
        _check_fields(_fields(entry), outcome=entry.outcome)


def _chained(entries: Sequence[AuditEntry], last: _Link, *, profile: Profile) -> list[AuditRecord]:
    """The entries as records, each chained to the one before, the first to `last`."""
    # Entries of a batch share one detail object: its canonical JSON, and what reading that
    # back gives (stored, so that the hash verifies after a round trip).
    details: dict[int, tuple[dict[str, Any], bytes]] = {}
    records: list[AuditRecord] = []
    for entry in entries:
        known = details.get(id(entry.detail))
        if known is None:
            value = dict(entry.detail or {})
            text = canonical_json(value)
            plain = orjson.loads(text)
            if not _keys_all_text(value):
                # Keys sorted as numbers, say, are sorted as text once read back: the hash is
                # of what a read gives back.
                text = canonical_json(plain)
            known = details[id(entry.detail)] = (plain, text)
        detail, detail_text = known
        unsigned = {
            **_fields(entry),
            "seq": last.seq + 1,
            "at": _utc(entry.at),
            "outcome": entry.outcome,
            "detail": detail,
            "prev_hash": last.hash,
        }
        record = AuditRecord(**unsigned, hash=_record_hash(unsigned, detail_text, profile=profile))
        records.append(record)
        last = _Link(seq=record.seq, hash=record.hash)
    return records


def _fields(entry: AuditEntry) -> dict[str, Any]:
    return {
        "client_id": entry.client_id,
        "action": entry.action,
        "target": entry.target,
        "purpose": entry.purpose,
        "trace_id": entry.trace_id,
    }


async def verify(
    session: AsyncSession,
    *,
    profile: Profile = "intl",
    chunk_size: int = 1000,
    checkpoint: Checkpoint | None = None,
) -> list[ChainBreak]:
    """Walk the chain from the anchor and report every edited or deleted record; with a
    checkpoint, also the newest records deleted since it was taken."""
    anchor = await _anchor(session)
    previous = anchor or _GENESIS
    breaks: list[ChainBreak] = []
    anchor_vouched = anchor is None
    signed_head_seen = checkpoint is None or checkpoint.seq <= previous.seq
    async for record in _records_after(session, previous.seq, chunk_size=chunk_size):
        breaks.extend(_check_link(record, previous=previous, profile=profile))
        anchor_vouched = anchor_vouched or _vouches_for(record, anchor)
        if checkpoint is not None and record.seq == checkpoint.seq:
            signed_head_seen = True
            if record.hash != checkpoint.hash:
                breaks.append(_replaced_head(checkpoint))
        previous = _Link(seq=record.seq, hash=record.hash)
    if checkpoint is not None and anchor is not None and checkpoint.seq == anchor.seq:
        if anchor.hash != checkpoint.hash:
            breaks.append(_replaced_head(checkpoint))
    if not signed_head_seen:
        assert checkpoint is not None
        missing = f"{previous.seq + 1} to {checkpoint.seq}"
        breaks.append(
            ChainBreak(
                previous.seq + 1,
                "deleted",
                f"records {missing} are missing: the checkpoint of "
                f"{utc_text(checkpoint.at)} saw the chain reach {checkpoint.seq}",
            )
        )
    if anchor is not None and not anchor_vouched:
        breaks.insert(
            0,
            ChainBreak(
                seq=anchor.seq,
                kind="deleted",
                detail=f"the anchor at seq {anchor.seq} is not vouched for by any "
                f"{PURGED_ACTION} record, so records up to it may have been removed",
            ),
        )
    return breaks


async def head_checkpoint(session: AsyncSession, *, now: datetime.datetime) -> Checkpoint:
    """The chain's newest seq and hash now (seq 0 and the genesis hash while it is empty)."""
    head = await _last_link(session)
    return Checkpoint(seq=head.seq, hash=head.hash, at=_utc(now))


def write_checkpoint(
    path: Path, checkpoint: Checkpoint, *, key: bytes, profile: Profile = "intl"
) -> bool:
    """Sign and write the checkpoint atomically, unless the file already holds a newer one
    (replicas share it); True when written."""
    try:
        if read_checkpoint(path, key=key, profile=profile).seq >= checkpoint.seq:
            return False
    except FileNotFoundError:
        pass
    except CheckpointError:
        pass  # unreadable or signed with another key: replaced by a good one
    body = _checkpoint_body(checkpoint)
    signed = {**body, "mac": _checkpoint_mac(body, key=key, profile=profile)}
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    temporary.write_bytes(canonical_json(signed))
    os.replace(temporary, path)
    return True


def read_checkpoint(path: Path, *, key: bytes, profile: Profile = "intl") -> Checkpoint:
    """The checkpoint in `path`; CheckpointError unless its signature verifies."""
    try:
        signed = json.loads(path.read_bytes())
        body = {name: signed[name] for name in ("seq", "hash", "at")}
        checkpoint = Checkpoint(
            seq=int(body["seq"]),
            hash=str(body["hash"]),
            at=datetime.datetime.fromisoformat(str(body["at"])),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path} is not a checkpoint: {exc}") from exc
    expected = _checkpoint_mac(body, key=key, profile=profile)
    if not hmac.compare_digest(expected, str(signed.get("mac", ""))):
        raise CheckpointError(
            f"{path}: the signature does not verify (edited, or signed with another key)"
        )
    return checkpoint


def _checkpoint_body(checkpoint: Checkpoint) -> dict[str, Any]:
    return {"seq": checkpoint.seq, "hash": checkpoint.hash, "at": utc_text(checkpoint.at)}


def _checkpoint_mac(body: Mapping[str, Any], *, key: bytes, profile: Profile) -> str:
    mac = crypto_hmac.HMAC(key, hash_algorithm(profile))
    mac.update(canonical_json(dict(body)))
    return mac.finalize().hex()


def _replaced_head(checkpoint: Checkpoint) -> ChainBreak:
    return ChainBreak(
        checkpoint.seq,
        "deleted",
        f"record {checkpoint.seq} is not the record the checkpoint of "
        f"{utc_text(checkpoint.at)} signed: the newest records were removed and others "
        "written in their place",
    )


async def purge(
    session: AsyncSession,
    *,
    retention_days: int,
    now: datetime.datetime,
    profile: Profile = "intl",
    client_id: str,
) -> int:
    """Delete records older than the retention, move the anchor, and record the purge."""
    if retention_days < 1:
        raise ValueError(f"retention_days must be at least 1, got {retention_days}")
    cutoff = _utc(now) - datetime.timedelta(days=retention_days)
    await _lock_chain(session)
    up_to = await _purgeable_prefix_end(session, cutoff=cutoff)
    removed = 0
    detail: dict[str, Any] = {"retention_days": retention_days, "cutoff": cutoff, "removed": 0}
    if up_to is not None:
        removed = await _delete_up_to(session, up_to, now=now)
        detail |= {"removed": removed, "up_to_seq": up_to.seq, "anchor_hash": up_to.hash}
    await append(
        session,
        client_id=client_id,
        action=PURGED_ACTION,
        target="audit_log",
        outcome="success",
        detail=detail,
        profile=profile,
        now=now,
    )
    return removed


def record_hash(fields: Mapping[str, Any], *, profile: Profile) -> str:
    """The hex digest of a record's canonical JSON (every field but `hash`)."""
    return digest(profile, canonical_json({key: fields[key] for key in _HASHED_FIELDS}))


def _record_hash(fields: Mapping[str, Any], detail_text: bytes, *, profile: Profile) -> str:
    """`record_hash`, for the chain, which has the detail's canonical JSON already made: the
    detail is most of a record (a household's report lists its 44 exchanges), and writing it
    a second time inside the record's JSON was a third of chaining the record
    (bench/README.md, stop 62). A check of the chain has no such text: writing the record in
    one call is cheaper there.

    The record's canonical JSON is its other fields' with `"detail":<detail_text>` put in
    their sorted place, right after the last key that sorts before "detail": keys are
    sorted at every depth, and the separators are the same, so this is byte for byte what
    `canonical_json` of the whole record writes.
    """
    hasher = hashes.Hash(hash_algorithm(profile))
    before = canonical_json({key: fields[key] for key in _HASHED_BEFORE_DETAIL})
    after = canonical_json({key: fields[key] for key in _HASHED_AFTER_DETAIL})
    hasher.update(before[:-1])  # without its "}"
    hasher.update(b',"detail":')
    hasher.update(detail_text)
    hasher.update(b",")
    hasher.update(after[1:])  # without its "{"
    return hasher.finalize().hex()


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8 unescaped, datetimes as ISO 8601 UTC."""
    return json.dumps(
        value,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
        default=_json_default,
    ).encode()


def _check_fields(fields: Mapping[str, str | None], *, outcome: str) -> None:
    if outcome not in _OUTCOMES:
        raise ValueError(f"outcome must be one of {_OUTCOMES}, got {outcome!r}")
    for name, value in fields.items():
        if value is not None and len(value) > _MAX_LENGTHS[name]:
            raise ValueError(f"{name} is longer than {_MAX_LENGTHS[name]} characters")


def utc_text(moment: datetime.datetime) -> str:
    """A time as the log writes it: ISO 8601 UTC with microseconds and a Z."""
    return _utc(moment).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _json_default(value: object) -> str:
    if isinstance(value, datetime.datetime):
        return utc_text(value)
    if isinstance(value, datetime.date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable in an audit record")


def _keys_all_text(value: dict[str, Any]) -> bool:
    """Whether every key at every depth is a string, so that the canonical JSON is the same
    written again after a read. orjson refuses any other key, in C: 7 µs for a household's
    report record, where a walk in Python took 95 (bench/README.md, stop 61). Any other
    refusal also answers False, which costs only a second writing."""
    try:
        orjson.dumps(value)
    except TypeError:
        return False
    return True


def _utc(moment: datetime.datetime) -> datetime.datetime:
    if moment.tzinfo is None:
        raise ValueError("audit times must be timezone-aware")
    return moment.astimezone(datetime.UTC)


# One chain per schema (one per service): services sharing a database do not queue behind
# each other's audit records.
_LOCK_SQL = f"pg_advisory_xact_lock({_ADVISORY_LOCK_KEY} # hashtextextended(current_schema(), 0))"

# PostgreSQL: append the records (`rows_param` of `audit_log`'s columns) if the chain's head is
# the one they were chained to; return the head found either way (`append_entries`). VOLATILE,
# so each query in it sees what was committed before it ran: the head is read after the lock
# is held. JSON rather than JSONB, so each record's detail is stored as the text it was hashed
# from (JSONB would rewrite a number such as 1e16).
APPEND_FUNCTION = f"""
CREATE OR REPLACE FUNCTION audit_append(expected_seq bigint, expected_hash text, records text)
RETURNS TABLE (head_seq bigint, head_hash text)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM {_LOCK_SQL};
    SELECT l.seq, l.hash INTO head_seq, head_hash FROM audit_log l ORDER BY l.seq DESC LIMIT 1;
    IF NOT FOUND THEN
        SELECT a.seq, a.hash INTO head_seq, head_hash FROM audit_anchor a WHERE a.id = 1;
        IF NOT FOUND THEN
            head_seq := 0;
            head_hash := '{GENESIS_HASH}';
        END IF;
    END IF;
    IF head_seq = expected_seq AND head_hash = expected_hash THEN
        INSERT INTO audit_log
        SELECT * FROM json_populate_recordset(NULL::audit_log, records::json);
    END IF;
    RETURN NEXT;
END
$$
"""
DROP_APPEND_FUNCTION = "DROP FUNCTION IF EXISTS audit_append(bigint, text, text)"

# PostgreSQL: `audit_append`, failing its statement with HEAD_MOVED when the head is not the
# one the records were chained to, the head found in the error's detail (`append_with`): the
# change it ends commits with its records or not at all.
HEAD_MOVED = "BFA01"
APPEND_OR_FAIL_FUNCTION = f"""
CREATE OR REPLACE FUNCTION audit_append_or_fail(expected_seq bigint, expected_hash text,
                                                records text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    head_seq bigint;
    head_hash text;
BEGIN
    SELECT h.head_seq, h.head_hash INTO head_seq, head_hash
    FROM audit_append(expected_seq, expected_hash, records) h;
    IF head_seq = expected_seq AND head_hash = expected_hash THEN
        RETURN head_seq;
    END IF;
    RAISE EXCEPTION 'the audit chain''s head moved' USING
        ERRCODE = '{HEAD_MOVED}', DETAIL = head_seq || ' ' || head_hash;
END
$$
"""
DROP_APPEND_OR_FAIL_FUNCTION = "DROP FUNCTION IF EXISTS audit_append_or_fail(bigint, text, text)"
# Tables made without the migrations (`create_all`: tests, benches) get the functions too.
for _function in (APPEND_FUNCTION, APPEND_OR_FAIL_FUNCTION):
    _create = DDL(_function)  # type: ignore[no-untyped-call]
    event.listen(audit_log, "after_create", _create.execute_if(dialect="postgresql"))

_APPEND = text("SELECT head_seq, head_hash FROM audit_append(:seq, :hash, :records)")
# What a change's statement ends in to append its records (`append_with`).
APPEND_CALL = select(
    func.audit_append_or_fail(
        bindparam("audit_seq", type_=BigInteger),
        bindparam("audit_hash", type_=String),
        bindparam("audit_records", type_=String),
    )
)
_TRIES = 5
_GENESIS = _Link(seq=0, hash=GENESIS_HASH)
# The head each chain (database, schema) had when this process last appended to it.
_heads: dict[tuple[URL, str | None], _Link] = {}


async def _lock_chain(session: AsyncSession) -> None:
    # SQLite needs no lock: the engine opens every transaction with BEGIN IMMEDIATE.
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        await session.execute(text(f"SELECT {_LOCK_SQL}"))


_HEAD = select(audit_log.c.seq, audit_log.c.hash).order_by(audit_log.c.seq.desc()).limit(1)
_ANCHOR = select(audit_anchor.c.seq, audit_anchor.c.hash).where(audit_anchor.c.id == 1)
# The same two reads in SQLite's SQL, for the call to the driver (`chained_in_call`).
_HEAD_SQL, _ANCHOR_SQL = (
    str(read.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
    for read in (_HEAD, _ANCHOR)
)


async def _last_link(session: AsyncSession) -> _Link:
    row = (await session.execute(_HEAD)).first()
    if row is not None:
        return _Link(seq=row.seq, hash=row.hash)
    return await _anchor(session) or _GENESIS


async def _anchor(session: AsyncSession) -> _Link | None:
    row = (await session.execute(_ANCHOR)).first()
    return None if row is None else _Link(seq=row.seq, hash=row.hash)


async def _records_after(
    session: AsyncSession, seq: int, *, chunk_size: int
) -> AsyncIterator[AuditRecord]:
    while True:
        rows = (
            await session.execute(
                select(audit_log)
                .where(audit_log.c.seq > seq)
                .order_by(audit_log.c.seq)
                .limit(chunk_size)
            )
        ).all()
        for row in rows:
            yield _record(row)
        if len(rows) < chunk_size:
            return
        seq = rows[-1].seq


def _record(row: Row[Any]) -> AuditRecord:
    values = dict(row._mapping)
    at = values["at"]
    # SQLite hands back naive datetimes; the log only ever stores UTC.
    values["at"] = at.replace(tzinfo=datetime.UTC) if at.tzinfo is None else _utc(at)
    return AuditRecord(**values)


def _check_link(record: AuditRecord, *, previous: _Link, profile: Profile) -> list[ChainBreak]:
    breaks: list[ChainBreak] = []
    if record.seq != previous.seq + 1:
        missing = (
            f"{previous.seq + 1}"
            if record.seq == previous.seq + 2
            else (f"{previous.seq + 1} to {record.seq - 1}")
        )
        breaks.append(ChainBreak(previous.seq + 1, "deleted", f"records {missing} are missing"))
    elif record.prev_hash != previous.hash:
        breaks.append(
            ChainBreak(
                record.seq,
                "deleted",
                f"prev_hash does not match the hash of record {previous.seq}: "
                "a record was removed or replaced",
            )
        )
    if record_hash(record.__dict__, profile=profile) != record.hash:
        breaks.append(ChainBreak(record.seq, "edited", "hash does not match the record's content"))
    return breaks


def _vouches_for(record: AuditRecord, anchor: _Link | None) -> bool:
    return (
        anchor is not None
        and record.action == PURGED_ACTION
        and record.detail.get("up_to_seq") == anchor.seq
        and record.detail.get("anchor_hash") == anchor.hash
    )


async def _purgeable_prefix_end(
    session: AsyncSession, *, cutoff: datetime.datetime
) -> _Link | None:
    # Only a prefix of the chain may go, or the anchor could not bridge the gap; a record
    # written with a late clock before older ones therefore keeps those older ones too.
    first_kept = select(func.min(audit_log.c.seq)).where(audit_log.c.at >= cutoff)
    last_purged = select(func.max(audit_log.c.seq))
    first_kept_seq = (await session.execute(first_kept)).scalar()
    if first_kept_seq is not None:
        last_purged = last_purged.where(audit_log.c.seq < first_kept_seq)
    seq = (await session.execute(last_purged)).scalar()
    if seq is None:
        return None
    row_hash = (
        await session.execute(select(audit_log.c.hash).where(audit_log.c.seq == seq))
    ).scalar_one()
    return _Link(seq=seq, hash=row_hash)


async def _delete_up_to(session: AsyncSession, up_to: _Link, *, now: datetime.datetime) -> int:
    condition = audit_log.c.seq <= up_to.seq
    count = (await session.execute(select(func.count()).where(condition))).scalar_one()
    await session.execute(audit_log.delete().where(condition))
    values = {"seq": up_to.seq, "hash": up_to.hash, "purged_at": _utc(now)}
    if await _anchor(session) is None:
        await session.execute(audit_anchor.insert().values(id=1, **values))
    else:
        await session.execute(audit_anchor.update().where(audit_anchor.c.id == 1).values(**values))
    return int(count)
