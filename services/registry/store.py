"""All of the registry's SQL: the household file, its members, history and follow-up records."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    and_,
    any_,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import Insert, Update
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import Select

from shared.db import (
    NothingChanged,
    UnitOfWork,
    insert_for,
    new_metadata,
    region_condition,
    write_together,
)
from shared.events.envelope import CloudEvent
from shared.events.outbox import outbox, outbox_cte, outbox_params, outbox_rows
from shared.registry_client import ATTACHED_RESULTS

metadata = new_metadata()
_id = String(36)
_big_id = BigInteger().with_variant(Integer, "sqlite")

household = Table(
    "household",
    metadata,
    Column("id", _id, primary_key=True),
    Column("region", String(6), nullable=False),
    Column("street_code", String(9)),
    Column("street_name", String(100)),
    Column("community_code", String(12)),
    Column("community_name", String(100)),
    Column("address", String(200), nullable=False),
    Column("hukou_type", String(10), nullable=False),
    Column("category", String(20), nullable=False),
    Column("flags", JSON, nullable=False),
    Column("channel", String(10), nullable=False),
    Column("submitted_by", String(100)),
    Column("status", String(20), nullable=False),
    Column("version", Integer, nullable=False),
    Column("notice_ends_on", Date),
    Column("rejection_reason", Text),
    Column("exit_kind", String(10)),
    Column("exit_reason", Text),
    Column("enrolled_on", Date),
    Column("exited_on", Date),
    Column("plan", JSON, nullable=False),
    Column("helper_id", String(64)),
    Column("helper_name", String(50)),
    Column("helper_unit", String(100)),
    Column("helper_phone_cipher", Text),
    Column("helper_phone_masked", String(20)),
    Column("last_visit_on", Date),
    Column("head_name", String(50), nullable=False),
    Column("head_identity_masked", String(18), nullable=False),
    Column("member_count", Integer, nullable=False),
    Column("verification", JSON),
    Column("entitlements", JSON),
    Column("exit_eligibility", JSON),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_household_region_id", "region", "id"),
    Index("ix_household_status_region", "status", "region"),
    Index("ix_household_category", "category"),
    Index("ix_household_helper_id_region", "helper_id", "region"),
    Index("ix_household_enrolled_on", "enrolled_on"),
)

household_cause = Table(
    "household_cause",
    metadata,
    Column("household_id", _id, ForeignKey("household.id", ondelete="CASCADE"), primary_key=True),
    Column("cause", String(30), primary_key=True),
    Index("ix_household_cause_cause", "cause", "household_id"),
)

member = Table(
    "member",
    metadata,
    Column("id", _id, primary_key=True),
    Column(
        "household_id",
        _id,
        ForeignKey("household.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("position", Integer, nullable=False),
    Column("name", String(50), nullable=False),
    Column("relation", String(20), nullable=False),
    Column("identity_cipher", Text, nullable=False),
    Column("identity_index", String(128), nullable=False, index=True),
    Column("identity_masked", String(18), nullable=False),
    Column("birth_date", Date, nullable=False),
    Column("sex", String(6), nullable=False),
    Column("hukou_type", String(10), nullable=False),
    Column("labour_capacity", String(10), nullable=False),
    Column("employment", String(20), nullable=False),
    Column("union_member", Boolean, nullable=False),
    Column("labour_contract_months", Integer),
    Column("major_illness", Boolean, nullable=False),
    Column("chronic_illness", Boolean, nullable=False),
    Column("disability_grade", Integer),
    Column("education_stage", String(30), nullable=False),
    Column("boarding", Boolean, nullable=False),
    Column("phone_cipher", Text),
    Column("phone_masked", String(20)),
)

# One person, one active household: the primary key makes it hold under concurrency too.
active_person = Table(
    "active_person",
    metadata,
    Column("identity_index", String(128), primary_key=True),
    Column("household_id", _id, nullable=False, index=True),
)

history = Table(
    "history",
    metadata,
    Column("id", _big_id, primary_key=True),
    Column("household_id", _id, nullable=False),
    Column("version", Integer, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(50), nullable=False),
    Column("changes", JSON, nullable=False),
    Column("comment", Text),
    Index("ix_history_household_version", "household_id", "version"),
)

helper_assignment = Table(
    "helper_assignment",
    metadata,
    Column("id", _big_id, primary_key=True),
    Column("household_id", _id, nullable=False, index=True),
    Column("helper_id", String(64), nullable=False),
    Column("name", String(50), nullable=False),
    Column("unit", String(100), nullable=False),
    Column("assigned_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True)),
    Column("reason", Text),
)

visit = Table(
    "visit",
    metadata,
    Column("id", _id, primary_key=True),
    Column("household_id", _id, nullable=False, index=True),
    Column("helper_id", String(64), nullable=False),
    Column("visited_on", Date, nullable=False),
    Column("findings", Text, nullable=False),
    Column("follow_up_needed", Boolean, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
)

declaration = Table(
    "declaration",
    metadata,
    Column("id", _big_id, primary_key=True),
    Column("household_id", _id, nullable=False, index=True),
    Column("member_id", _id, nullable=False),
    Column("kind", String(10), nullable=False),  # income | asset
    Column("item", String(30), nullable=False),
    Column("month", String(7)),
    Column("amount_fen", BigInteger, nullable=False),
    Column("note", String(200)),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
)

monthly_income = Table(
    "monthly_income",
    metadata,
    Column("household_id", _id, primary_key=True),
    Column("month", String(7), primary_key=True),
    Column("income_fen", BigInteger, nullable=False),
    Column("member_count", Integer, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
)

objection = Table(
    "objection",
    metadata,
    Column("id", _big_id, primary_key=True),
    Column("household_id", _id, nullable=False, index=True),
    Column("text", Text, nullable=False),
    Column("raised_at", DateTime(timezone=True), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("resolved_at", DateTime(timezone=True)),
)

yearly_target = Table(
    "yearly_target",
    metadata,
    Column("region", String(6), primary_key=True),
    Column("year", Integer, primary_key=True),
    Column("share_percent", Integer, nullable=False),  # of households on file at the year's start
)


# `insert_household`'s parameter of that name hides the table.
_HISTORY = history
_REMOVE_CAUSE = delete(household_cause).where(
    household_cause.c.household_id == bindparam("household_id"),
    household_cause.c.cause == bindparam("cause"),
)


@lru_cache(maxsize=8)
def _update_household_setting(keys: tuple[str, ...]) -> Update:
    """SQLite: the UPDATE of a household at its expected version, setting these columns and
    `updated_at`, each bound by name (`write_together` runs it as written), RETURNING it."""
    return (
        update(household)
        .where(household.c.id == bindparam("_id"), household.c.version == bindparam("_expected"))
        .values({k: bindparam(k) for k in (*keys, "updated_at")})
        .returning(*household.c)
    )


def _now() -> datetime:
    return datetime.now(UTC)


class PersonInActiveHousehold(Exception):
    """The blind index is already claimed by an active household."""

    def __init__(self, household_id: str):
        super().__init__(household_id)
        self.household_id = household_id


# -- households --------------------------------------------------------------------------


async def insert_household(
    session: AsyncSession,
    row: dict[str, Any],
    causes: Sequence[str],
    members: Sequence[dict[str, Any]],
    *,
    history: Sequence[dict[str, Any]],
    events: Sequence[CloudEvent],
    one_write: bool = False,
) -> None:
    """File a new household: its row, causes, members, history and events' outbox rows, and
    a claim of each member (raises PersonInActiveHousehold naming the household that holds
    one). `one_write`: the unit's one write (`UnitOfWork.one_write`), so on PostgreSQL its
    statements commit on their own, and on SQLite its COMMIT goes with its rows."""
    now = _now()
    indexes = [m["identity_index"] for m in members]
    if _is_postgresql(session):
        # One statement instead of five: each round trip costs the service ~0.3 ms of CPU
        # and PostgreSQL more (bench/registry.py).
        params: dict[str, Any] = {f"h_{k}": v for k, v in row.items()}
        params.update(now=now, causes=list(causes))
        for i, m in enumerate(members):
            params.update({f"m{i}_{k}": v for k, v in m.items()})
        params["indexes"] = indexes
        params.update(_history_params(history), **outbox_params(events))
        statement = _filing_statement(len(members), len(history), all_or_none=one_write)
        if one_write:
            await _file_all_or_none(session, statement, params, row["id"], indexes)
            return
        claimed = (await session.execute(statement, params)).scalars().all()
        await _check_claimed(session, row["id"], indexes, claimed)
        return
    # The claims and every row in one call to the driver (`write_together`, on the loop's
    # thread since stop 52): a statement each was a wake-up of aiosqlite's thread and back,
    # each costly where they run on different cores (bench/registry.py, stop 48), and the
    # claims' own INSERT … RETURNING went through SQLAlchemy's session, compiled anew for each
    # number of members (stop 50: 7.0 ms of the registry's CPU an operation against 7.6).
    # The claims go first: a person held refuses them, and nothing else is written.
    try:
        await write_together(
            session,
            [
                (
                    active_person,
                    [{"identity_index": i, "household_id": row["id"]} for i in indexes],
                ),
                (household, [{**row, "created_at": now, "updated_at": now}]),
                (household_cause, [{"household_id": row["id"], "cause": c} for c in causes]),
                (member, list(members)),
                (_HISTORY, [{**r, "at": now} for r in history]),
                (outbox, outbox_rows(events)),
            ],
            commit=one_write,
        )
    except IntegrityError as exc:
        # SQLite has one writer: the holder is still there, in the transaction still open.
        if "active_person" not in str(exc.orig):
            raise
        holder = await _holder(session, row["id"], indexes)
        assert holder is not None  # a new household holds nobody
        raise PersonInActiveHousehold(holder) from exc


async def update_household(
    session: AsyncSession,
    household_id: str,
    *,
    expected_version: int,
    row: dict[str, Any],
    causes_removed: Sequence[str] = (),
    causes_added: Sequence[str] = (),
    history: Sequence[dict[str, Any]] = (),
    events: Sequence[CloudEvent] = (),
    one_write: bool = False,
) -> dict[str, Any] | None:
    """Write the new state, its history and its events' outbox rows if nobody else changed it
    first (optimistic concurrency): the row as written (results other services attached
    included), or None when the version moved on (the caller then rolls back; on PostgreSQL
    the events are not written even if it did not). `one_write`: the unit's one write
    (`UnitOfWork.one_write`), so on SQLite its COMMIT goes with its rows.

    Only the causes that changed are written; the version check makes the ones read still
    current."""
    now = _now()
    params = {**row, "updated_at": now, "_id": household_id, "_expected": expected_version}
    if _is_postgresql(session):
        # One statement instead of two to four; the causes are changed only through the
        # updated row, so the household's row is locked first, as before.
        params.update(causes_removed=list(causes_removed), causes_added=list(causes_added), now=now)
        params.update(_history_params(history), **outbox_params(events))
        written = (
            (await session.execute(_change_statement(len(history)), params))
            .mappings()
            .one_or_none()
        )
        return dict(written) if written else None
    # The UPDATE and the rest in one call to the driver, as a filing's
    # (`insert_household`), not through SQLAlchemy's session in a call of its own (stop 50,
    # with the claims' change: 6.0 ms of the registry's CPU an operation against 7.7).
    key = {"household_id": household_id}
    try:
        return await write_together(
            session,
            [
                (_REMOVE_CAUSE, [{**key, "cause": c} for c in causes_removed]),
                (household_cause, [{**key, "cause": c} for c in causes_added]),
                (_HISTORY, [{**r, "at": now} for r in history]),
                (outbox, outbox_rows(events)),
            ],
            commit=one_write,
            first=(_update_household_setting(tuple(row)), params),
        )
    except NothingChanged:
        return None


def _is_postgresql(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


# PostgreSQL's one-statement writes, built once per shape (members, history rows) and cached
# with their compiled SQL: the values are parameters, never part of the statement.
_HISTORY_COLUMNS = ("version", "actor", "action", "comment", "changes")
_TEXTS = postgresql.ARRAY(String)
_FILED_COLUMNS = [c for c in household.c if c.name not in ATTACHED_RESULTS]
_EDITED_COLUMNS = [c for c in household.c if c.name not in ("id", "created_at", *ATTACHED_RESULTS)]


def _history_params(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {f"y{i}_{k}": r[k] for i, r in enumerate(rows) for k in _HISTORY_COLUMNS}


def _history_ctes(household_id: Any, now: Any, rows: int) -> list[Any]:
    """The history rows' INSERTs, one row for each `household_id` selected: a parameter, or the
    id of the row a change updated, so that a change refused for its version writes none."""
    # A CTE per row: SQLAlchemy caches no INSERT of several VALUES rows, and compiling one
    # costs more than the round trips saved.
    return [
        insert(history)
        .from_select(
            ["household_id", "at", *_HISTORY_COLUMNS],
            select(
                household_id,
                now,
                *(bindparam(f"y{i}_{k}", type_=history.c[k].type) for k in _HISTORY_COLUMNS),
            ),
        )
        .cte(f"added_history_{i}")
        for i in range(rows)
    ]


async def _file_all_or_none(
    session: AsyncSession,
    statement: Insert,
    params: dict[str, Any],
    household_id: str,
    indexes: Sequence[str],
) -> None:
    """Without a transaction to roll back, a person held already fails the whole filing
    statement; the holder is looked up after it."""
    for attempt in (1, 2):
        try:
            await session.execute(statement, params)
            return
        except IntegrityError as exc:
            driver_error = exc.orig.__cause__ if exc.orig else None  # asyncpg's
            if getattr(driver_error, "constraint_name", None) != "pk_active_person":
                raise
            holder = await _holder(session, household_id, indexes)
            if holder is not None:
                raise PersonInActiveHousehold(holder) from exc
            if attempt == 2:
                raise
            # Released since the statement failed (an exit): the filing may claim it now.


@lru_cache(maxsize=64)
def _filing_statement(members: int, history_rows: int, *, all_or_none: bool = False) -> Insert:
    household_id = bindparam("h_id", type_=household.c.id.type)
    now = bindparam("now", type_=household.c.created_at.type)
    filed_values = {c.name: bindparam(f"h_{c.name}", type_=c.type) for c in _FILED_COLUMNS}
    filed_values.update(id=household_id, created_at=now, updated_at=now)
    ctes = [
        insert(household).values(filed_values).cte("filed"),
        insert(household_cause)
        .from_select(
            ["household_id", "cause"],
            select(household_id, func.unnest(bindparam("causes", type_=_TEXTS))),
        )
        .cte("filed_causes"),
        *(
            insert(member)
            .values({c.name: bindparam(f"m{i}_{c.name}", type_=c.type) for c in member.c})
            .cte(f"filed_member_{i}")
            for i in range(members)
        ),
        *_history_ctes(household_id, now, history_rows),
        outbox_cte(),
    ]
    claims = postgresql.insert(active_person).from_select(
        ["identity_index", "household_id"],
        select(func.unnest(bindparam("indexes", type_=_TEXTS)), household_id),
    )
    # In a transaction a claim refused is seen after the statement, which is rolled back;
    # all or none, the unique key refuses the whole statement.
    if not all_or_none:
        claims = claims.on_conflict_do_nothing(index_elements=["identity_index"])
    return claims.returning(active_person.c.identity_index).add_cte(*ctes)


@lru_cache(maxsize=16)
def _change_statement(history_rows: int) -> Select[Any]:
    household_id = bindparam("_id", type_=household.c.id.type)
    updated = (
        update(household)
        .where(
            household.c.id == household_id,
            household.c.version == bindparam("_expected", type_=Integer),
        )
        .values({c.name: bindparam(c.name, type_=c.type) for c in _EDITED_COLUMNS})
        .returning(*household.c)
        .cte("updated")
    )
    ctes = [
        delete(household_cause)
        .where(
            household_cause.c.household_id == select(updated.c.id).scalar_subquery(),
            household_cause.c.cause == any_(bindparam("causes_removed", type_=_TEXTS)),
        )
        .cte("removed_causes"),
        insert(household_cause)
        .from_select(
            ["household_id", "cause"],
            select(updated.c.id, func.unnest(bindparam("causes_added", type_=_TEXTS))),
        )
        .cte("added_causes"),
    ]
    now = bindparam("now", type_=household.c.updated_at.type)
    return select(updated).add_cte(
        *ctes,
        *_history_ctes(updated.c.id, now, history_rows),
        outbox_cte(when=select(updated.c.id).exists()),
    )


async def attach_results(
    session: AsyncSession, field_name: str, values: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """Set one of the columns other services' results live in, for each household of `values`
    (its id and value); the version is not touched.

    Returns each held household's version and region; one not held here is left out. Two
    statements for any number of households: the UPDATE given all of them at execution, then
    one read of what it changed. Taken before the read, the UPDATE's row locks keep its version
    the one read (a read of the whole file first, its JSON columns decoded, was two fifths of
    the registry's handling of a completed verification in a batch; a statement or two an
    event after that).
    """
    if field_name not in ATTACHED_RESULTS:
        raise ValueError(f"{field_name!r} is not a result another service attaches")
    if not values:
        return {}
    now = _now()
    # In the ids' order: consumers attaching to the same files side by side then take their
    # row locks in one order, and neither waits on the other's (a deadlock on PostgreSQL).
    await session.execute(
        _attach_statement(field_name),
        [
            {"attached_id": h, "attached_value": values[h], "attached_at": now}
            for h in sorted(values)
        ],
    )
    held = await session.execute(
        select(household.c.id, household.c.version, household.c.region).where(
            household.c.id.in_(list(values))
        )
    )
    return {row.id: {"version": row.version, "region": row.region} for row in held}


@lru_cache(maxsize=len(ATTACHED_RESULTS))
def _attach_statement(field_name: str) -> Update:
    """Built once per column (`attach_results`), its rows given at execution."""
    return (
        update(household)
        .where(household.c.id == bindparam("attached_id"))
        .values(
            {
                field_name: bindparam("attached_value", type_=household.c[field_name].type),
                "updated_at": bindparam("attached_at", type_=household.c.updated_at.type),
            }
        )
    )


async def get_household(session: AsyncSession, household_id: str) -> dict[str, Any] | None:
    row = (
        (await session.execute(select(household).where(household.c.id == household_id)))
        .mappings()
        .one_or_none()
    )
    return dict(row) if row else None


# The separator as SQL text: given as a string, SQLAlchemy renders it into the statement at
# every execution (1.8 % of a write's CPU, py-spy).
_COMMA: Any = literal_column("','")


def _file_statement() -> Select[Any]:
    causes = (
        select(func.aggregate_strings(household_cause.c.cause, _COMMA))
        .where(household_cause.c.household_id == household.c.id)
        .scalar_subquery()
        .label("_causes")
    )
    members = [c.label(f"_m_{c.name}") for c in member.c]
    return (
        select(household, causes, *members)
        .outerjoin(member, member.c.household_id == household.c.id)
        .where(household.c.id == bindparam("household_id", type_=household.c.id.type))
        .order_by(member.c.position)
    )


_FILE = _file_statement()
_MEMBER_LABELS = [(f"_m_{c.name}", c.name) for c in member.c]


async def get_household_file(
    uow: UnitOfWork, household_id: str, *, committed: bool = False
) -> tuple[dict[str, Any], list[str], list[dict[str, Any]]] | None:
    """The household, its causes (sorted) and its members (in order) in one statement, for a
    write that loads it: a round trip fewer than reading the members apart.

    `committed`: as committed, read apart from the unit's transaction where the database
    allows (`UnitOfWork.read_committed`), for a write that checks the version it read.
    """
    parameters = {"household_id": household_id}
    if committed:
        rows = await uow.read_committed(_FILE, parameters)
    else:
        rows = (await uow.session.execute(_FILE, parameters)).mappings().all()
    if not rows:
        return None
    first = rows[0]
    row = {c.name: first[c.name] for c in household.c}
    joined = first["_causes"]
    members = [
        {name: r[label] for label, name in _MEMBER_LABELS} for r in rows if r["_m_id"] is not None
    ]
    return row, sorted(joined.split(",")) if joined else [], members


async def get_households(
    session: AsyncSession, household_ids: Sequence[str]
) -> list[dict[str, Any]]:
    """The households with these ids that exist, in one query, in no particular order."""
    rows = await session.execute(select(household).where(household.c.id.in_(household_ids)))
    return [dict(r) for r in rows.mappings()]


async def get_causes(session: AsyncSession, household_id: str) -> list[str]:
    rows = await session.execute(
        select(household_cause.c.cause)
        .where(household_cause.c.household_id == household_id)
        .order_by(household_cause.c.cause)
    )
    return list(rows.scalars())


async def get_members(session: AsyncSession, household_id: str) -> list[dict[str, Any]]:
    rows = await session.execute(
        select(member).where(member.c.household_id == household_id).order_by(member.c.position)
    )
    return [dict(r) for r in rows.mappings()]


async def get_members_of(
    session: AsyncSession, household_ids: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    """The members of many households in one query, by household, in their order."""
    rows = await session.execute(
        select(member)
        .where(member.c.household_id.in_(household_ids))
        .order_by(member.c.household_id, member.c.position)
    )
    found: dict[str, list[dict[str, Any]]] = {}
    for row in rows.mappings():
        found.setdefault(row["household_id"], []).append(dict(row))
    return found


async def get_causes_of(
    session: AsyncSession, household_ids: Sequence[str]
) -> dict[str, list[str]]:
    """The causes of many households in one query, by household, sorted."""
    rows = await session.execute(
        select(household_cause.c.household_id, household_cause.c.cause)
        .where(household_cause.c.household_id.in_(household_ids))
        .order_by(household_cause.c.household_id, household_cause.c.cause)
    )
    found: dict[str, list[str]] = {}
    for household_id, cause in rows:
        found.setdefault(household_id, []).append(cause)
    return found


async def insert_member(session: AsyncSession, row: dict[str, Any]) -> None:
    await session.execute(insert(member).values(**row))


async def update_member(session: AsyncSession, member_id: str, row: dict[str, Any]) -> None:
    await session.execute(update(member).where(member.c.id == member_id).values(**row))


async def delete_member(session: AsyncSession, member_id: str) -> None:
    await session.execute(delete(member).where(member.c.id == member_id))


# -- one person, one active household ----------------------------------------------------


async def claim_persons(session: AsyncSession, household_id: str, indexes: Sequence[str]) -> None:
    """Claim each person for this household; raise naming the household that holds one.

    One INSERT … ON CONFLICT DO NOTHING claims every free person at once, race-free, and
    returns those it claimed; only when one was not claimed (held already, by this household
    or another) does a select look for another household holding one.
    """
    if not indexes:
        return
    claimed = await _claim(session, household_id, indexes)
    await _check_claimed(session, household_id, indexes, claimed)


async def _claim(session: AsyncSession, household_id: str, indexes: Sequence[str]) -> list[str]:
    """The persons claimed of these: those no household held."""
    claimed = await session.execute(
        insert_for(session, active_person)
        .values([{"identity_index": i, "household_id": household_id} for i in indexes])
        .on_conflict_do_nothing(index_elements=["identity_index"])
        .returning(active_person.c.identity_index)
    )
    return list(claimed.scalars())


async def _check_claimed(
    session: AsyncSession, household_id: str, indexes: Sequence[str], claimed: Sequence[str]
) -> None:
    """Raise if another household holds a person the claim skipped.

    One held by no other household is held by this one already, or was let go since the claim
    skipped it (PostgreSQL: the holder's exit committed between the two statements): claimed
    again, once, or this household would be filed with a person anyone may claim.
    """
    unclaimed = sorted(set(indexes) - set(claimed))
    for attempt in (1, 2):
        if not unclaimed:
            return
        holder = await _holder(session, household_id, unclaimed)
        if holder is not None:
            raise PersonInActiveHousehold(holder)
        if attempt == 1:
            unclaimed = sorted(set(unclaimed) - set(await _claim(session, household_id, unclaimed)))


async def _holder(session: AsyncSession, household_id: str, indexes: Sequence[str]) -> str | None:
    """Another household holding one of these persons, if any."""
    holder: str | None = (
        await session.execute(
            select(active_person.c.household_id)
            .where(
                active_person.c.identity_index.in_(indexes),
                active_person.c.household_id != household_id,
            )
            .limit(1)
        )
    ).scalar_one_or_none()
    return holder


async def release_persons(
    session: AsyncSession, household_id: str, indexes: Sequence[str] | None = None
) -> None:
    """Release this household's claims (all of them, or only `indexes`)."""
    condition = active_person.c.household_id == household_id
    if indexes is not None:
        condition = and_(condition, active_person.c.identity_index.in_(indexes))
    await session.execute(delete(active_person).where(condition))


# -- history and follow-up ---------------------------------------------------------------


async def add_history(
    session: AsyncSession, rows: Sequence[dict[str, Any]], *, now: datetime | None = None
) -> None:
    if rows:
        at = now or _now()
        await session.execute(insert(history), [{**r, "at": at} for r in rows])


async def get_history(session: AsyncSession, household_id: str) -> list[dict[str, Any]]:
    rows = await session.execute(
        select(history).where(history.c.household_id == household_id).order_by(history.c.id)
    )
    return [dict(r) for r in rows.mappings()]


async def start_helper_assignment(session: AsyncSession, row: dict[str, Any]) -> None:
    now = _now()
    await session.execute(
        update(helper_assignment)
        .where(
            helper_assignment.c.household_id == row["household_id"],
            helper_assignment.c.ended_at.is_(None),
        )
        .values(ended_at=now)
    )
    await session.execute(insert(helper_assignment).values(**row, assigned_at=now))


async def get_helper_assignments(session: AsyncSession, household_id: str) -> list[dict[str, Any]]:
    rows = await session.execute(
        select(helper_assignment)
        .where(helper_assignment.c.household_id == household_id)
        .order_by(helper_assignment.c.id)
    )
    return [dict(r) for r in rows.mappings()]


async def insert_visit(session: AsyncSession, row: dict[str, Any]) -> None:
    await session.execute(insert(visit).values(**row, recorded_at=_now()))


async def get_visits(session: AsyncSession, household_id: str) -> list[dict[str, Any]]:
    rows = await session.execute(
        select(visit).where(visit.c.household_id == household_id).order_by(visit.c.visited_on)
    )
    return [dict(r) for r in rows.mappings()]


async def insert_declarations(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    now = _now()
    await session.execute(insert(declaration), [{**r, "recorded_at": now} for r in rows])


async def get_declarations(session: AsyncSession, household_id: str) -> list[dict[str, Any]]:
    rows = await session.execute(
        select(declaration)
        .where(declaration.c.household_id == household_id)
        .order_by(declaration.c.id)
    )
    return [dict(r) for r in rows.mappings()]


async def get_declarations_of(
    session: AsyncSession, household_ids: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    """The declared items of many households in one query, by household, oldest first."""
    rows = await session.execute(
        select(declaration)
        .where(declaration.c.household_id.in_(household_ids))
        .order_by(declaration.c.household_id, declaration.c.id)
    )
    found: dict[str, list[dict[str, Any]]] = {}
    for row in rows.mappings():
        found.setdefault(row["household_id"], []).append(dict(row))
    return found


async def upsert_monthly_income(session: AsyncSession, row: dict[str, Any]) -> None:
    await session.execute(
        delete(monthly_income).where(
            monthly_income.c.household_id == row["household_id"],
            monthly_income.c.month == row["month"],
        )
    )
    await session.execute(insert(monthly_income).values(**row, recorded_at=_now()))


async def get_monthly_incomes(session: AsyncSession, household_id: str) -> list[dict[str, Any]]:
    rows = await session.execute(
        select(monthly_income)
        .where(monthly_income.c.household_id == household_id)
        .order_by(monthly_income.c.month)
    )
    return [dict(r) for r in rows.mappings()]


async def insert_objection(
    session: AsyncSession, *, household_id: str, text: str, actor: str
) -> None:
    await session.execute(
        insert(objection).values(
            household_id=household_id, text=text, actor=actor, raised_at=_now()
        )
    )


async def resolve_objections(session: AsyncSession, household_id: str) -> None:
    await session.execute(
        update(objection)
        .where(objection.c.household_id == household_id, objection.c.resolved_at.is_(None))
        .values(resolved_at=_now())
    )


# -- lists -------------------------------------------------------------------------------


@dataclass(frozen=True)
class HouseholdFilter:
    """Which households a list or count takes, always within `regions`."""

    regions: Sequence[str]
    status: str | None = None
    category: str | None = None
    cause: str | None = None
    helper_id: str | None = None
    enrolled_from: date | None = None
    enrolled_to: date | None = None
    visit_overdue_before: date | None = None
    # 异议待处理: an objection not yet resolved (the file is back in county review).
    objected: bool = False
    # 公示期满: still publicly noticed, the notice ended on or before this day.
    notice_ended_by: date | None = None
    # 脱困提示: enrolled, and benefits flagged the income as above the line.
    exit_flagged: bool = False

    def conditions(self) -> list[ColumnElement[bool]]:
        where = [region_condition(household.c.region, self.regions)]
        if self.status:
            where.append(household.c.status == self.status)
        if self.category:
            where.append(household.c.category == self.category)
        if self.cause:
            causes = select(household_cause.c.household_id).where(
                household_cause.c.cause == self.cause
            )
            where.append(household.c.id.in_(causes))
        if self.helper_id:
            where.append(household.c.helper_id == self.helper_id)
        if self.enrolled_from:
            where.append(household.c.enrolled_on >= self.enrolled_from)
        if self.enrolled_to:
            where.append(household.c.enrolled_on <= self.enrolled_to)
        if self.visit_overdue_before:
            where.append(household.c.status == "enrolled")
            where.append(
                or_(
                    household.c.last_visit_on.is_(None),
                    household.c.last_visit_on < self.visit_overdue_before,
                )
            )
        if self.objected:
            open_objections = select(objection.c.household_id).where(
                objection.c.resolved_at.is_(None)
            )
            where.append(household.c.id.in_(open_objections))
        if self.notice_ended_by:
            where.append(household.c.status == "publicly_noticed")
            where.append(household.c.notice_ends_on <= self.notice_ended_by)
        if self.exit_flagged:
            where.append(household.c.status == "enrolled")
            # The flag is an object with its day; a file without one holds SQL or JSON null.
            where.append(household.c.exit_eligibility["flagged_at"].as_string().is_not(None))
        return where


async def list_households(
    session: AsyncSession, matching: HouseholdFilter, *, after: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """One page ordered by id (UUIDv7, so by filing time)."""
    query = select(household).where(*matching.conditions())
    if after:
        query = query.where(household.c.id > after)
    rows = await session.execute(query.order_by(household.c.id).limit(limit))
    return [dict(r) for r in rows.mappings()]


async def count_matching(session: AsyncSession, matching: HouseholdFilter) -> int:
    """How many households the filter takes."""
    count = await session.execute(
        select(func.count()).select_from(household).where(*matching.conditions())
    )
    return int(count.scalar_one())


async def count_by_region_status_category(
    session: AsyncSession, *, regions: Sequence[str]
) -> list[tuple[str, str, str, int]]:
    rows = await session.execute(
        select(household.c.region, household.c.status, household.c.category, func.count())
        .where(region_condition(household.c.region, regions))
        .group_by(household.c.region, household.c.status, household.c.category)
        .order_by(household.c.region, household.c.status, household.c.category)
    )
    return [(r[0], r[1], r[2], int(r[3])) for r in rows]


async def enrolments_and_exits(
    session: AsyncSession, *, regions: Sequence[str], year: int
) -> list[tuple[str, int, int, int]]:
    """Per region: enrolled before the year, enrolled during it, exited during it."""
    start, end = date(year, 1, 1), date(year + 1, 1, 1)
    rows = await session.execute(
        select(
            household.c.region,
            func.sum(
                _case(
                    and_(
                        household.c.enrolled_on < start,
                        or_(household.c.exited_on.is_(None), household.c.exited_on >= start),
                    )
                )
            ),
            func.sum(_case(and_(household.c.enrolled_on >= start, household.c.enrolled_on < end))),
            func.sum(_case(and_(household.c.exited_on >= start, household.c.exited_on < end))),
        )
        .where(region_condition(household.c.region, regions), household.c.enrolled_on.is_not(None))
        .group_by(household.c.region)
        .order_by(household.c.region)
    )
    return [(r[0], int(r[1] or 0), int(r[2] or 0), int(r[3] or 0)) for r in rows]


def _case(condition: Any) -> Any:
    return case((condition, 1), else_=0)


async def get_targets(session: AsyncSession, *, year: int) -> dict[str, int]:
    rows = await session.execute(
        select(yearly_target.c.region, yearly_target.c.share_percent).where(
            yearly_target.c.year == year
        )
    )
    return {r[0]: int(r[1]) for r in rows}


async def set_target(session: AsyncSession, *, region: str, year: int, share_percent: int) -> None:
    await session.execute(
        delete(yearly_target).where(yearly_target.c.region == region, yearly_target.c.year == year)
    )
    await session.execute(
        insert(yearly_target).values(region=region, year=year, share_percent=share_percent)
    )


async def overdue_visits_by_helper(
    session: AsyncSession, *, regions: Sequence[str], before: date
) -> list[tuple[str, str, str, int]]:
    rows = await session.execute(
        select(
            household.c.helper_id, household.c.helper_name, household.c.helper_unit, func.count()
        )
        .where(
            region_condition(household.c.region, regions),
            household.c.status == "enrolled",
            household.c.helper_id.is_not(None),
            or_(household.c.last_visit_on.is_(None), household.c.last_visit_on < before),
        )
        .group_by(household.c.helper_id, household.c.helper_name, household.c.helper_unit)
        .order_by(func.count().desc())
    )
    return [(r[0], r[1], r[2], int(r[3])) for r in rows]


async def open_objections(
    session: AsyncSession, *, regions: Sequence[str], status: str, limit: int
) -> list[tuple[str, str]]:
    """(household id, text) of unresolved objections to households of `regions` in `status`."""
    rows = await session.execute(
        select(objection.c.household_id, objection.c.text)
        .join(household, household.c.id == objection.c.household_id)
        .where(
            region_condition(household.c.region, regions),
            household.c.status == status,
            objection.c.resolved_at.is_(None),
        )
        .order_by(objection.c.id)
        .limit(limit)
    )
    return [(r[0], r[1]) for r in rows]
