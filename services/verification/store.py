"""All of the verification service's SQL."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Index,
    Integer,
    Select,
    String,
    Table,
    Text,
    Update,
    any_,
    bindparam,
    delete,
    false,
    func,
    insert,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from shared import audit
from shared.crypto import Profile
from shared.db import new_metadata, recordset, region_condition, rows_param, write_together
from shared.events.envelope import CloudEvent
from shared.events.outbox import (
    at_once,
    note_at_once,
    outbox,
    outbox_cte,
    outbox_params,
    outbox_rows,
)

metadata = new_metadata()

consent = Table(
    "consent",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("person_index", String(128), nullable=False, index=True),
    Column("identity_masked", String(18), nullable=False),
    Column("region", String(6), nullable=False),
    Column("household_id", String(36), index=True),
    Column("signed_by", String(50), nullable=False),
    Column("signed_on", Date, nullable=False),
    Column("expires_on", Date, nullable=False),
    Column("departments", JSON, nullable=False),
    Column("document_ref", String(100), nullable=False),
    Column("revoked_on", Date),
    Column("revoked_reason", Text),
    Column("recorded_by", String(200), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
)


async def insert_consent(session: AsyncSession, row: dict[str, Any]) -> None:
    await session.execute(insert(consent).values(**row))


async def get_consent(session: AsyncSession, consent_id: str) -> dict[str, Any] | None:
    row = (
        (await session.execute(select(consent).where(consent.c.id == consent_id)))
        .mappings()
        .one_or_none()
    )
    return dict(row) if row else None


# The consents of the people whose blind indexes are the parameter `person_indexes`, oldest
# first. Built once: building it was 0.1-0.2 ms of a request for a verification, before its
# first department is asked (bench/verification.py).
CONSENTS_OF = (
    select(consent)
    .where(consent.c.person_index.in_(bindparam("person_indexes", expanding=True)))
    .order_by(consent.c.signed_on, consent.c.id)
)


async def consents_of(session: AsyncSession, person_indexes: Sequence[str]) -> list[dict[str, Any]]:
    rows = await session.execute(CONSENTS_OF, {"person_indexes": list(person_indexes)})
    return [dict(r) for r in rows.mappings()]


async def consents_of_household(session: AsyncSession, household_id: str) -> list[dict[str, Any]]:
    rows = await session.execute(
        select(consent)
        .where(consent.c.household_id == household_id)
        .order_by(consent.c.signed_on, consent.c.id)
    )
    return [dict(r) for r in rows.mappings()]


async def revoke_consent(
    session: AsyncSession, consent_id: str, *, on: date, reason: str, at: datetime
) -> None:
    await session.execute(
        update(consent)
        .where(consent.c.id == consent_id)
        .values(revoked_on=on, revoked_reason=reason, revoked_at=at)
    )


# -- verifications (核对) -------------------------------------------------------------------

verification = Table(
    "verification",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("household_id", String(36), index=True),
    Column("region", String(6), nullable=False),
    Column("purpose", String(200), nullable=False),
    Column("departments", JSON, nullable=False),
    # api | applied | changed | recheck | department_change | batch
    Column("trigger", String(20), nullable=False),
    # What started it (an event id, a recheck key): a redelivery finds it and starts nothing.
    Column("cause", String(100), unique=True),
    Column("batch_id", String(36), index=True),
    Column("requested_by", String(200), nullable=False),
    # queued | running | completed | failed | cancelled
    Column("status", String(12), nullable=False),
    Column("reason", Text),
    # Members given inline (or resolved at request time), encrypted: they carry identity numbers.
    Column("members_cipher", Text),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("not_before", DateTime(timezone=True), nullable=False),
    Column("claimed_until", DateTime(timezone=True)),
    Column("report_version", Integer, nullable=False, server_default="0"),
    # Set while some item is unavailable: when to ask those departments again.
    Column("refetch_at", DateTime(timezone=True)),
    Column("refetch_interval_seconds", Float),
    Column("requested_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Index("ix_verification_status_not_before", "status", "not_before"),
    Index("ix_verification_refetch_at", "refetch_at"),
)

report = Table(
    "report",
    metadata,
    Column("verification_id", String(36), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("household_id", String(36)),
    Column("content_hash", String(64), nullable=False),
    Column("body", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Every question put to a department about a person: "who looked at my data"; with the
# answer a report was made of, encrypted, until `purge_after`. The log stays after the purge.
department_query = Table(
    "department_query",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("person_index", String(128), nullable=False, index=True),
    Column("verification_id", String(36), nullable=False),
    # The member as the request or the household's file named them (migration 0011: a
    # question logged before it has one only if its answer was kept).
    Column("member_id", String(36)),
    Column("department", String(20), nullable=False),
    Column("consent_id", String(36), nullable=False),
    Column("purpose", String(200), nullable=False),
    Column("requested_by", String(200), nullable=False),
    Column("outcome", String(12), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("response_digest", String(64)),
    Column("queried_at", DateTime(timezone=True), nullable=False),
    Column("answer_cipher", Text),
    Column("purge_after", DateTime(timezone=True), index=True),
)

batch = Table(
    "batch",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("region", String(6)),
    Column("purpose", String(200), nullable=False),
    Column("requested_by", String(200), nullable=False),
    # running | completed | cancelled
    Column("status", String(12), nullable=False),
    Column("total", Integer, nullable=False),
    Column("done", Integer, nullable=False, server_default="0"),
    Column("failed", Integer, nullable=False, server_default="0"),
    Column("cancelled", Integer, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
)

# The households the service follows: enrolled ones are re-checked yearly and on department
# changes; `feed_index` is how a department's change feed names a member.
watched_household = Table(
    "watched_household",
    metadata,
    Column("household_id", String(36), primary_key=True),
    Column("region", String(6), nullable=False),
    Column("enrolled", Boolean, nullable=False, server_default=false()),
    Column("last_verified_at", DateTime(timezone=True)),
    Index("ix_watched_household_enrolled", "enrolled", "last_verified_at"),
)

watched_person = Table(
    "watched_person",
    metadata,
    Column("feed_index", String(64), primary_key=True),
    # Indexed: a report's write replaces its household's people (a scan of 40,000 rows each).
    Column("household_id", String(36), primary_key=True, index=True),
)


# -- verification queries -------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


# The row goes as parameters of a constant statement: `.values(row)` built a statement per
# call, and its cache key cost 0.25 ms of the insert's 0.55 on PostgreSQL (0.3 of 0.8 on SQLite).
_INSERT_VERIFICATION = {
    "postgresql": postgresql.insert(verification)
    .on_conflict_do_nothing()
    .returning(*verification.columns),
    "sqlite": sqlite.insert(verification).on_conflict_do_nothing().returning(*verification.columns),
}


async def insert_verification(session: AsyncSession, row: dict[str, Any]) -> dict[str, Any] | None:
    """Insert a verification unless its cause started one already: the row as stored (its
    defaults filled in), or None."""
    statement = _INSERT_VERIFICATION[session.get_bind().dialect.name]
    stored = (await session.execute(statement, row)).mappings().one_or_none()
    return dict(stored) if stored else None


async def get_verification(session: AsyncSession, verification_id: str) -> dict[str, Any] | None:
    row = (
        (await session.execute(select(verification).where(verification.c.id == verification_id)))
        .mappings()
        .one_or_none()
    )
    return dict(row) if row else None


async def claim_queued(
    session: AsyncSession, *, limit: int, lease_seconds: float
) -> list[dict[str, Any]]:
    """Take up to `limit` verifications to run: abandoned by a dead worker, then queued and due.

    Two claims, not one whose WHERE ORs the two: each walks its own part of
    ix_verification_status_not_before and stops at `limit`, where the OR had PostgreSQL scan and
    sort every queued row on each claim (3 ms at 10,000 queued, so O(batch) a claim).
    """
    now = _now()
    taken = {
        "status": "running",
        "claimed_until": now + timedelta(seconds=lease_seconds),
        "attempts": verification.c.attempts + 1,
    }
    abandoned = await _claim(
        session,
        (verification.c.status == "running") & (verification.c.claimed_until < now),
        order_by=verification.c.claimed_until,
        limit=limit,
        **taken,
    )
    if len(abandoned) == limit:
        return abandoned
    queued = await _claim(
        session,
        (verification.c.status == "queued") & (verification.c.not_before <= now),
        order_by=verification.c.not_before,
        limit=limit - len(abandoned),
        **taken,
    )
    return abandoned + queued


async def claim_refetches(
    session: AsyncSession, *, limit: int, lease_seconds: float
) -> list[dict[str, Any]]:
    """Completed verifications whose missing items are due to be asked for again."""
    now = _now()
    return await _claim(
        session,
        verification.c.refetch_at <= now,
        order_by=verification.c.refetch_at,
        limit=limit,
        refetch_at=now + timedelta(seconds=lease_seconds),
    )


async def _claim(
    session: AsyncSession,
    due: ColumnElement[bool],
    *,
    order_by: ColumnElement[Any],
    limit: int,
    **values: Any,
) -> list[dict[str, Any]]:
    """Mark up to `limit` due rows as taken and return them.

    FOR UPDATE SKIP LOCKED lets several replicas claim side by side on PostgreSQL; SQLite's
    single writer serialises the claims.
    """
    ids = (
        select(verification.c.id)
        .where(due)
        .order_by(order_by)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    claimed = list((await session.execute(ids)).scalars())
    if not claimed:
        return []
    rows = await session.execute(
        update(verification)
        .where(verification.c.id.in_(claimed))
        .values(**values)
        .returning(*verification.c)
    )
    return [dict(r) for r in rows.mappings()]


async def update_verification(session: AsyncSession, verification_id: str, **values: Any) -> None:
    await session.execute(
        update(verification).where(verification.c.id == verification_id).values(**values)
    )


def _updated_verifications(
    rows: Sequence[Mapping[str, Any]],
) -> list[tuple[Update, list[dict[str, Any]]]]:
    """The UPDATE of several verifications (each row its `id` and new values, the same
    columns in every row) and its rows; none without rows."""
    if not rows:
        return []
    columns = tuple(c for c in rows[0] if c != "id")
    params = [{"verification_id": r["id"], **{f"new_{c}": r[c] for c in columns}} for r in rows]
    return [(_update_verifications(columns), params)]


@lru_cache(maxsize=16)
def _update_verifications(columns: tuple[str, ...]) -> Update:
    """Built once per set of columns: built at each report's write, its cache key cost 0.1 ms
    of the update's 0.3 on PostgreSQL."""
    return (
        update(verification)
        .where(verification.c.id == bindparam("verification_id"))
        .values({c: bindparam(f"new_{c}") for c in columns})
    )


# The verification's columns a written report sets (`write_reports`).
COMPLETED_COLUMNS = (
    "status",
    "report_version",
    "reason",
    "members_cipher",
    "claimed_until",
    "finished_at",
    "refetch_at",
    "refetch_interval_seconds",
)


async def write_reports(
    session: AsyncSession,
    *,
    queries: Sequence[dict[str, Any]],
    reports: Sequence[dict[str, Any]],
    completed: Sequence[dict[str, Any]],
    watched: Sequence[Mapping[str, Any]],
    feed_indexes: Mapping[str, Sequence[str]],
    events: Sequence[CloudEvent],
    audit_entries: Sequence[audit.AuditEntry],
    profile: Profile,
) -> None:
    """Write reports with their rows: the query log with the encrypted answers, the reports,
    the verifications' new values (`id` and `COMPLETED_COLUMNS`), the followed households
    and people, the events' outbox rows and the audit records. These are the transaction's
    last writes: the unit of work's commit must follow.

    On PostgreSQL in one statement instead of eight, its audit records appended by it, in a unit
    of one write (`Database.unit_of_work(one_write=True)`): no BEGIN, no COMMIT, no call of
    its own for the audit records (`audit.append_with`). A statement's round trip costs the
    service ~0.3 ms of CPU and PostgreSQL more, and the report's write was 10 ms of a
    household's 75-85 there (bench/README.md).

    On SQLite, every row, the updates, the audit records (chained to the head read there,
    under the write lock its transaction holds) and the COMMIT go in one call to the driver
    (`write_together`, on the loop's thread): statement by statement, the update, the audit
    chain's head, the audit record and the commit were four more calls, each a wait for the
    thread and for SQLAlchemy's statement machinery (bench/verification.py, stops 36 and 37),
    and the followed households and people four more (stop 41).
    """
    latest = {r["household_id"]: r for r in watched}  # an upsert changes a row once
    followed = [
        {"feed_index": i, "household_id": household_id}
        for household_id, indexes in feed_indexes.items()
        for i in sorted(set(indexes))
    ]
    if session.get_bind().dialect.name != "postgresql":
        await write_together(
            session,
            [
                (department_query, queries),
                (report, reports),
                *_updated_verifications(completed),
                (_WATCH_HOUSEHOLD, [dict(r) for r in latest.values()]),
                (_UNFOLLOW_HOUSEHOLD, [{"household_id": h} for h in feed_indexes]),
                (watched_person, followed),
                (outbox, outbox_rows(events)),
                (audit.audit_log, audit.chained_in_call(audit_entries, profile=profile)),
            ],
            commit=True,
        )
        return
    params = {
        "query": rows_param(_QUERY_COLUMNS, queries),
        "report": rows_param(report.c, reports),
        "done": rows_param(_DONE_COLUMNS, completed),
        "watched": rows_param(_WATCHED_COLUMNS, latest.values()),
        "followed": rows_param(watched_person.c, followed),
        "followed_households": list(feed_indexes),
        "done_ids": [r["id"] for r in completed],
        **outbox_params(events),
    }
    _, row = await audit.append_with(
        session, _REPORTS_STATEMENT, params, audit_entries, profile=profile
    )
    note_at_once(session, row.outbox_at_once)


_HOUSEHOLD_IDS = postgresql.ARRAY(watched_person.c.household_id.type)
_VERIFICATION_IDS = postgresql.ARRAY(verification.c.id.type)
_QUERY_COLUMNS = [c for c in department_query.c if c.name != "id"]
_DONE_COLUMNS = [verification.c.id, *(verification.c[c] for c in COMPLETED_COLUMNS)]
_WATCHED_COLUMNS = [
    watched_household.c.household_id,
    watched_household.c.region,
    watched_household.c.last_verified_at,
]

# SQLite: a followed household's row (its id, region and last verification), inserted or, for
# a household that moved, updated; and its people removed, before its people now are inserted.
_watched = sqlite.insert(watched_household).values(
    {c.name: bindparam(c.name, type_=c.type) for c in _WATCHED_COLUMNS}
)
_WATCH_HOUSEHOLD = _watched.on_conflict_do_update(
    index_elements=[watched_household.c.household_id],
    set_={
        "region": _watched.excluded.region,
        "last_verified_at": _watched.excluded.last_verified_at,
    },
)
_UNFOLLOW_HOUSEHOLD = delete(watched_person).where(
    watched_person.c.household_id == bindparam("household_id")
)


def _inserted(table: Table, name: str, columns: Sequence[Column[Any]]) -> postgresql.Insert:
    return postgresql.insert(table).from_select([c.name for c in columns], recordset(name, columns))


def _reports_statement() -> Select[Any]:
    done = recordset("done", _DONE_COLUMNS).subquery("done")
    watched = _inserted(watched_household, "watched", _WATCHED_COLUMNS)
    followed = recordset("followed", list(watched_person.c)).subquery("followed")
    ctes = [
        _inserted(department_query, "query", _QUERY_COLUMNS).cte("queries_written"),
        _inserted(report, "report", list(report.c)).cte("reports_written"),
        # The ids again, as an array: the planner takes a recordset to hold 100 rows, and
        # joined it to a table of fewer than ~20,000 by scanning the table (a group of 10
        # reports read all 10,000 of the bench's batch); `= ANY` makes it an index lookup.
        update(verification)
        .where(
            verification.c.id == done.c.id,
            verification.c.id == any_(bindparam("done_ids", type_=_VERIFICATION_IDS)),
        )
        .values({c: done.c[c] for c in COMPLETED_COLUMNS})
        .cte("verifications_done"),
        # A household that moved is verified in its new region.
        watched.on_conflict_do_update(
            index_elements=[watched_household.c.household_id],
            set_={
                "region": watched.excluded.region,
                "last_verified_at": watched.excluded.last_verified_at,
            },
        ).cte("households_watched"),
        # Its people now instead of whoever it had: the others go, the new ones come.
        delete(watched_person)
        .where(
            watched_person.c.household_id
            == any_(bindparam("followed_households", type_=_HOUSEHOLD_IDS)),
            tuple_(watched_person.c.feed_index, watched_person.c.household_id).not_in(
                select(followed.c.feed_index, followed.c.household_id)
            ),
        )
        .cte("unfollowed"),
        postgresql.insert(watched_person)
        .from_select(["feed_index", "household_id"], select(followed))
        .on_conflict_do_nothing()
        .cte("followed_written"),
        written := outbox_cte(),
    ]
    # Ends in the audit records' append, which fails the statement if the chain's head moved.
    return audit.APPEND_CALL.add_columns(at_once(written)).add_cte(*ctes)


_REPORTS_STATEMENT = _reports_statement()


async def latest_items(session: AsyncSession, verification_id: str) -> list[dict[str, Any]]:
    """The items of the verification's latest report, as its body holds them.

    A version keeps the items of the one before that it did not ask again, so the latest
    report has every member at every department: no table of items is kept beside the reports
    (its 44 rows a household were 0.6 ms of a single household's 67 over PostgreSQL).
    """
    latest = await get_report(session, verification_id)
    return list(latest["body"]["report"]["items"]) if latest else []


async def insert_rows(session: AsyncSession, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await session.execute(insert(table), list(rows))


async def get_report(
    session: AsyncSession, verification_id: str, version: int | None = None
) -> dict[str, Any] | None:
    query = select(report).where(report.c.verification_id == verification_id)
    query = query.where(report.c.version == version) if version else query
    row = (
        (await session.execute(query.order_by(report.c.version.desc()).limit(1)))
        .mappings()
        .one_or_none()
    )
    return dict(row) if row else None


async def report_versions(session: AsyncSession, verification_id: str) -> list[dict[str, Any]]:
    rows = await session.execute(
        select(report.c.version, report.c.content_hash, report.c.created_at)
        .where(report.c.verification_id == verification_id)
        .order_by(report.c.version)
    )
    return [dict(r) for r in rows.mappings()]


async def purge_raw_answers(session: AsyncSession, *, before: datetime) -> int:
    """Forget the answers kept past their time; the questions stay in the log."""
    result = await session.execute(
        update(department_query)
        .where(department_query.c.purge_after < before)
        .values(answer_cipher=None, purge_after=None)
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def count_raw_answers(session: AsyncSession, verification_id: str) -> int:
    return int(
        (
            await session.execute(
                select(func.count())
                .select_from(department_query)
                .where(
                    department_query.c.verification_id == verification_id,
                    department_query.c.answer_cipher.is_not(None),
                )
            )
        ).scalar_one()
    )


async def queries_about(session: AsyncSession, person_index: str) -> list[dict[str, Any]]:
    """Every department query about one person, with the region of its verification."""
    rows = await session.execute(
        select(
            *(c for c in department_query.c if c.name != "answer_cipher"),
            verification.c.region,
            verification.c.household_id,
        )
        .join(verification, verification.c.id == department_query.c.verification_id)
        .where(department_query.c.person_index == person_index)
        .order_by(department_query.c.queried_at, department_query.c.id)
    )
    return [dict(r) for r in rows.mappings()]


# -- batches and watched households ---------------------------------------------------------


async def get_batch(session: AsyncSession, batch_id: str) -> dict[str, Any] | None:
    row = (
        (await session.execute(select(batch).where(batch.c.id == batch_id)))
        .mappings()
        .one_or_none()
    )
    return dict(row) if row else None


async def tally_batch(
    session: AsyncSession, batch_id: str
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Count a batch's outcomes from its verifications; (before, after) if the count moved.

    The counts are derived, never incremented inside a verification's transaction: a counter
    row every finishing verification updated held all of them in one queue (2 households/s
    on a busy PostgreSQL). A tally that loses a race to another is retried; a running batch
    whose last tally was lost to a crash is tallied again by the worker's periodic duty.
    """
    for _ in range(3):
        before = await get_batch(session, batch_id)
        if before is None:
            return None
        v = verification.c
        outcomes = select(
            func.count().filter(v.report_version >= 1).label("done"),
            func.count().filter(v.status == "failed", v.report_version == 0).label("failed"),
            func.count().filter(v.status == "cancelled").label("cancelled"),
        ).where(v.batch_id == batch_id)
        counts = (await session.execute(outcomes)).mappings().one()
        # Households failed at creation (not in the registry) have rows too: counted alike.
        after = {**before, **{k: int(counts[k] or 0) for k in ("done", "failed", "cancelled")}}
        if settled(after) <= settled(before):
            return None
        if before["status"] == "running" and settled(after) >= after["total"]:
            after.update(status="completed", finished_at=_now())
        moved = await session.execute(
            update(batch)
            .where(
                batch.c.id == batch_id,
                batch.c.done == before["done"],
                batch.c.failed == before["failed"],
                batch.c.cancelled == before["cancelled"],
            )
            .values(
                done=after["done"],
                failed=after["failed"],
                cancelled=after["cancelled"],
                status=after["status"],
                finished_at=after["finished_at"],
            )
        )
        if getattr(moved, "rowcount", 0):
            return before, after
    return None


async def sample_verifications(session: AsyncSession) -> None:
    """PostgreSQL: have the planner's statistics of the verification table sampled anew.

    A batch files up to a region's every household at once, and autovacuum samples a table a
    minute later at best. Planned meanwhile from the table's size before, a claim read and
    sorted every queued row (a bitmap scan estimated at 4 rows) and a tally did the same with
    the batch's (bench/README.md, stop 64). ANALYZE reads a sample, not the table: 30,000 rows
    at most with the default statistics target.
    """
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("ANALYZE verification"))


async def running_batch_ids(session: AsyncSession) -> list[str]:
    rows = await session.execute(select(batch.c.id).where(batch.c.status == "running"))
    return list(rows.scalars())


def settled(row: Mapping[str, Any]) -> int:
    """Households of a batch accounted for: done, failed or cancelled."""
    return int(row["done"] + row["failed"] + row["cancelled"])


async def cancel_batch(session: AsyncSession, batch_id: str) -> int:
    """Cancel what has not started; what runs finishes. Returns how many were cancelled."""
    result = await session.execute(
        update(verification)
        .where(verification.c.batch_id == batch_id, verification.c.status == "queued")
        .values(status="cancelled", finished_at=_now(), reason="batch cancelled")
    )
    cancelled = int(getattr(result, "rowcount", 0) or 0)
    await session.execute(
        update(batch).where(batch.c.id == batch_id).values(status="cancelled", finished_at=_now())
    )
    await tally_batch(session, batch_id)
    return cancelled


async def batch_results(
    session: AsyncSession, batch_id: str, *, after: tuple[datetime, str] | None, limit: int
) -> list[dict[str, Any]]:
    """Finished verifications of a batch in the order they finished, after a position."""
    query = select(
        verification.c.id,
        verification.c.household_id,
        verification.c.status,
        verification.c.reason,
        verification.c.report_version,
        verification.c.finished_at,
    ).where(verification.c.batch_id == batch_id, verification.c.finished_at.is_not(None))
    if after:
        query = query.where(
            (verification.c.finished_at > after[0])
            | ((verification.c.finished_at == after[0]) & (verification.c.id > after[1]))
        )
    rows = await session.execute(
        query.order_by(verification.c.finished_at, verification.c.id).limit(limit)
    )
    return [dict(r) for r in rows.mappings()]


async def watch_household(
    session: AsyncSession, household_id: str, *, region: str, **values: Any
) -> None:
    """Record or update a followed household (its region, enrolment, last verification)."""
    exists = (
        await session.execute(
            select(watched_household.c.household_id).where(
                watched_household.c.household_id == household_id
            )
        )
    ).scalar_one_or_none()
    if exists is None:
        await session.execute(
            insert(watched_household).values(household_id=household_id, region=region, **values)
        )
    else:  # a household that moved is verified in its new region
        await session.execute(
            update(watched_household)
            .where(watched_household.c.household_id == household_id)
            .values(region=region, **values)
        )


async def due_for_recheck(
    session: AsyncSession, *, before: datetime, limit: int
) -> list[dict[str, Any]]:
    rows = await session.execute(
        select(watched_household)
        .where(
            watched_household.c.enrolled.is_(True),
            (watched_household.c.last_verified_at.is_(None))
            | (watched_household.c.last_verified_at < before),
        )
        .limit(limit)
    )
    return [dict(r) for r in rows.mappings()]


async def enrolled_households_of(session: AsyncSession, feed_index: str) -> list[dict[str, Any]]:
    rows = await session.execute(
        select(watched_household)
        .join(watched_person, watched_person.c.household_id == watched_household.c.household_id)
        .where(watched_person.c.feed_index == feed_index, watched_household.c.enrolled.is_(True))
    )
    return [dict(r) for r in rows.mappings()]


async def list_verifications(
    session: AsyncSession,
    *,
    regions: Sequence[str],
    household_id: str | None,
    batch_id: str | None,
    status: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    # Confined in SQL, before the limit: a page holds only what the caller may see.
    query = select(verification).where(region_condition(verification.c.region, regions))
    if household_id:
        query = query.where(verification.c.household_id == household_id)
    if batch_id:
        query = query.where(verification.c.batch_id == batch_id)
    if status:
        query = query.where(verification.c.status == status)
    rows = await session.execute(query.order_by(verification.c.requested_at.desc()).limit(limit))
    return [dict(r) for r in rows.mappings()]
