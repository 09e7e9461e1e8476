"""The verification service's use cases: each takes a unit of work and never commits it."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote

from sqlalchemy.ext.asyncio import AsyncSession

from services.verification import store
from services.verification.checking import Person
from services.verification.domain.consent import Consent, after_revocations, consent_state
from services.verification.domain.departments import Department
from services.verification.domain.events import (
    BatchProgress,
    VerificationCompleted,
    VerificationFailed,
    VerificationRequested,
)
from services.verification.domain.report import Declared
from shared import audit
from shared.auth import Principal
from shared.crypto import Keyring, blind_index, encrypt
from shared.db import UnitOfWork, as_utc
from shared.events.envelope import CloudEvent, new_event, new_event_id
from shared.identity import mask_identity_number, parse_identity_number
from shared.observability import current_traceparent, trace_id_of
from shared.regions import parse_region

INDEX_PURPOSE = "identity_number"


class ConsentNotFound(Exception):
    """No such consent, or not one the caller may see."""


class RegionNotAllowed(Exception):
    """The caller may not record consents for this region."""


class InvalidConsent(ValueError):
    def __init__(self, field_name: str, reason: str):
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name


@dataclass(frozen=True)
class Context:
    principal: Principal
    keyring: Keyring
    today: date

    @property
    def actor(self) -> str:
        return self.principal.client_id


def person_index(keyring: Keyring, identity_number: str, *, today: date) -> str:
    """The blind index a person's consents and queries are filed under."""
    return person_index_of(keyring, parse_identity_number(identity_number, today=today).number)


def to_consent(row: Mapping[str, Any]) -> Consent:
    return Consent(
        id=row["id"],
        person_index=row["person_index"],
        signed_by=row["signed_by"],
        signed_on=row["signed_on"],
        expires_on=row["expires_on"],
        departments=frozenset(Department(d) for d in row["departments"]),
        document_ref=row["document_ref"],
        revoked_on=row["revoked_on"],
        recorded_at=as_utc(row["recorded_at"]),
        revoked_at=as_utc(row["revoked_at"]) if row["revoked_at"] else None,
    )


# Shown for a consent ended by a revocation of another of the person's consents.
ENDED_BY_REVOCATION = "本人已撤回授权 (the person revoked their consent)"


def view(row: Mapping[str, Any], consent: Consent, *, today: date) -> dict[str, Any]:
    """A consent as the API shows it: the number masked, its state as of today.

    `consent` is the row as the person's revocations leave it (`after_revocations`).
    """
    # Any department it covers tells whether it is in force; NOT_COVERED cannot occur here.
    state = consent.state_for(next(iter(consent.departments)), on=today)
    ended_elsewhere = consent.revoked_on != row["revoked_on"]
    return {
        "id": row["id"],
        "identity_number": row["identity_masked"],
        "region": row["region"],
        "household_id": row["household_id"],
        "signed_by": row["signed_by"],
        "signed_on": row["signed_on"],
        "expires_on": row["expires_on"],
        "departments": sorted(row["departments"]),
        "document_ref": row["document_ref"],
        "revoked_on": consent.revoked_on,
        "revoked_reason": ENDED_BY_REVOCATION if ended_elsewhere else row["revoked_reason"],
        "state": state.value,
    }


def _by_id(rows: Sequence[Mapping[str, Any]]) -> dict[str, Consent]:
    """One person's consents (every region), as their revocations leave them, by id."""
    return {c.id: c for c in after_revocations([to_consent(r) for r in rows])}


async def _as_revoked(session: AsyncSession, person_index: str) -> dict[str, Consent]:
    return _by_id(await store.consents_of(session, [person_index]))


async def _audit(
    uow: UnitOfWork, ctx: Context, *, action: str, target: str, detail: dict[str, Any]
) -> None:
    await audit.append(
        uow.session,
        client_id=ctx.actor,
        action=action,
        target=target,
        outcome="success",
        trace_id=trace_id_of(current_traceparent()),
        detail=detail,
        profile=ctx.keyring.profile,
        now=datetime.now(UTC),
    )


async def record_consent(
    uow: UnitOfWork,
    ctx: Context,
    *,
    identity_number: str,
    region: str,
    household_id: str | None,
    signed_by: str,
    signed_on: date,
    expires_on: date,
    departments: list[Department],
    document_ref: str,
) -> dict[str, Any]:
    """File a signed 核对授权书; it is what lets departments be asked about the person."""
    parse_region(region)
    if not ctx.principal.covers(region):
        raise RegionNotAllowed(region)
    if signed_on > ctx.today:
        raise InvalidConsent("signed_on", "a consent cannot be signed in the future")
    if expires_on < signed_on:
        raise InvalidConsent("expires_on", "must not be before signed_on")
    number = parse_identity_number(identity_number, today=ctx.today).number
    consent_id = new_event_id()
    row: dict[str, Any] = {
        "id": consent_id,
        "person_index": person_index_of(ctx.keyring, number),
        "identity_masked": mask_identity_number(number),
        "region": region,
        "household_id": household_id,
        "signed_by": signed_by.strip(),
        "signed_on": signed_on,
        "expires_on": expires_on,
        "departments": sorted(d.value for d in set(departments)),
        "document_ref": document_ref,
        "recorded_by": ctx.actor,
        "recorded_at": datetime.now(UTC),
        "revoked_on": None,
        "revoked_reason": None,
        "revoked_at": None,
    }
    await store.insert_consent(uow.session, row)
    await _audit(
        uow,
        ctx,
        action="consent.recorded",
        target=consent_id,
        detail={
            "document_ref": document_ref,
            "departments": row["departments"],
            "expires_on": expires_on.isoformat(),
        },
    )
    consents = await _as_revoked(uow.session, row["person_index"])
    return view(row, consents[consent_id], today=ctx.today)


async def _consent_row(uow: UnitOfWork, ctx: Context, consent_id: str) -> dict[str, Any]:
    row = await store.get_consent(uow.session, consent_id)
    if row is None or not ctx.principal.covers(row["region"]):
        raise ConsentNotFound(consent_id)
    return row


async def get_consent(uow: UnitOfWork, ctx: Context, consent_id: str) -> dict[str, Any]:
    """One consent inside the caller's regions, as the person's revocations leave it."""
    row = await _consent_row(uow, ctx, consent_id)
    consents = await _as_revoked(uow.session, row["person_index"])
    return view(row, consents[consent_id], today=ctx.today)


async def find_consents(
    uow: UnitOfWork, ctx: Context, *, identity_number: str
) -> list[dict[str, Any]]:
    """A person's consents inside the caller's regions."""
    index = person_index(ctx.keyring, identity_number, today=ctx.today)
    rows = await store.consents_of(uow.session, [index])
    consents = _by_id(rows)
    return [
        view(r, consents[r["id"]], today=ctx.today)
        for r in rows
        if ctx.principal.covers(r["region"])
    ]


async def household_consents(
    uow: UnitOfWork, ctx: Context, *, household_id: str
) -> list[dict[str, Any]]:
    """The consents recorded for a household's members, inside the caller's regions, each in
    the state its person's revocations leave it (a revocation may end the person's others)."""
    recorded = await store.consents_of_household(uow.session, household_id)
    people = sorted({r["person_index"] for r in recorded})
    by_person: dict[str, list[dict[str, Any]]] = {}
    for row in await store.consents_of(uow.session, people):
        by_person.setdefault(row["person_index"], []).append(row)
    states: dict[str, Consent] = {}
    for rows in by_person.values():
        states |= _by_id(rows)
    return [
        view(r, states[r["id"]], today=ctx.today)
        for r in recorded
        if ctx.principal.covers(r["region"])
    ]


async def revoke_consent(
    uow: UnitOfWork, ctx: Context, consent_id: str, *, reason: str, revoked_on: date | None
) -> dict[str, Any]:
    """Withdraw a consent from a day on (today by default); earlier queries stay lawful."""
    row = await _consent_row(uow, ctx, consent_id)
    on = revoked_on or ctx.today
    if row["revoked_on"] is not None:
        raise InvalidConsent("revoked_on", f"already revoked on {row['revoked_on']}")
    if on < row["signed_on"]:
        raise InvalidConsent("revoked_on", "must not be before the consent was signed")
    await store.revoke_consent(uow.session, consent_id, on=on, reason=reason, at=datetime.now(UTC))
    await _audit(
        uow,
        ctx,
        action="consent.revoked",
        target=consent_id,
        detail={"revoked_on": on.isoformat(), "reason": reason},
    )
    return await get_consent(uow, ctx, consent_id)


# -- verifications --------------------------------------------------------------------------

SUBJECT_CONTEXT = "verification.subject"


@dataclass(frozen=True)
class Subject:
    """Who is checked: the members (with their numbers) and what the household declared."""

    household_id: str | None
    region: str
    members: tuple[tuple[str, str], ...]  # (member id, identity number)
    declared: tuple[Declared, ...]

    def to_json(self) -> str:
        return json.dumps(
            {
                "household_id": self.household_id,
                "region": self.region,
                "members": [list(m) for m in self.members],
                "declared": [asdict(d) for d in self.declared],
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, text: str) -> Subject:
        body = json.loads(text)
        return cls(
            household_id=body["household_id"],
            region=body["region"],
            members=tuple((m[0], m[1]) for m in body["members"]),
            declared=tuple(Declared(**d) for d in body["declared"]),
        )


def subject_from_registry(
    household: Mapping[str, Any], declarations: Sequence[Mapping[str, Any]]
) -> Subject:
    """The household as the registry gives it; the latest declaration of each item counts."""
    latest: dict[tuple[str, str, str], int] = {}
    for row in sorted(declarations, key=lambda r: r["id"]):
        latest[(row["member_id"], row["kind"], row["item"])] = row["amount_fen"]
    return Subject(
        household_id=household["id"],
        region=household["location"]["region"],
        members=tuple((m["id"], m["identity_number"]) for m in household["members"]),
        declared=tuple(Declared(m, kind, item, fen) for (m, kind, item), fen in latest.items()),
    )


def to_cloudevent(
    event: VerificationRequested | VerificationCompleted | VerificationFailed | BatchProgress,
    *,
    region: str,
    sequence: int,
) -> CloudEvent:
    subject = event.batch_id if isinstance(event, BatchProgress) else event.verification_id
    # Field by field: the events hold plain values only (a report's discrepancies as dicts),
    # which `asdict` deep-copied one by one (0.4 ms of a household's report).
    data = {
        f.name: list(v) if isinstance(v := getattr(event, f.name), tuple) else v
        for f in fields(event)
    }
    return new_event(
        service="verification",
        aggregate=event.aggregate,
        name=event.name,
        subject=subject,
        region=region,
        sequence=sequence,
        data=data,
    )


# The registry takes a `Bangfu-Purpose` header of at most this many characters, percent-encoded
# (a Chinese character takes nine): a longer purpose would have every read of it refused.
REGISTRY_PURPOSE_MAX = 500


def registry_purpose(purpose: str) -> str:
    """Why the registry is read (`核对: <purpose>`), shortened with "…" to fit its header."""
    text = f"核对: {purpose}"
    if len(quote(text)) <= REGISTRY_PURPOSE_MAX:
        return text
    while len(quote(text + "…")) > REGISTRY_PURPOSE_MAX:
        text = text[:-1]
    return text + "…"


def _queued(
    *,
    household_id: str | None,
    region: str,
    purpose: str,
    departments: Sequence[Department],
    trigger: str,
    requested_by: str,
    cause: str | None = None,
    batch_id: str | None = None,
    members_cipher: str | None = None,
) -> tuple[dict[str, Any], CloudEvent]:
    """A queued verification's row and its `verification.requested` event."""
    now, verification_id = datetime.now(UTC), new_event_id()
    codes = tuple(sorted(d.value for d in departments))
    row = {
        "id": verification_id,
        "household_id": household_id,
        "region": region,
        "purpose": purpose,
        "departments": list(codes),
        "trigger": trigger,
        "cause": cause,
        "batch_id": batch_id,
        "requested_by": requested_by,
        "status": "queued",
        "members_cipher": members_cipher,
        "not_before": now,
        "requested_at": now,
    }
    event = VerificationRequested(verification_id, household_id, trigger, purpose, codes, batch_id)
    return row, to_cloudevent(event, region=region, sequence=0)


async def request(
    uow: UnitOfWork,
    *,
    household_id: str | None,
    region: str,
    purpose: str,
    departments: Sequence[Department],
    trigger: str,
    requested_by: str,
    cause: str | None = None,
) -> dict[str, Any] | None:
    """Queue one verification and announce it: its row as stored, or None if its cause
    started one."""
    row, event = _queued(
        household_id=household_id,
        region=region,
        purpose=purpose,
        departments=departments,
        trigger=trigger,
        requested_by=requested_by,
        cause=cause,
    )
    return await file(uow, row, event)


async def file(uow: UnitOfWork, row: dict[str, Any], event: CloudEvent) -> dict[str, Any] | None:
    """Write a queued verification's row and announce it: the row as stored, or None if its
    cause started one."""
    stored = await store.insert_verification(uow.session, row)
    if stored is not None:
        uow.publish(event)
    return stored


async def people_of(uow: UnitOfWork, keyring: Keyring, subject: Subject) -> list[Person]:
    """The members with the consents that count for the household (`people_with`), as
    committed (`UnitOfWork.read_committed`: read first, before the unit writes)."""
    indexes = [person_index_of(keyring, number) for _, number in subject.members]
    rows = await uow.read_committed(store.CONSENTS_OF, {"person_indexes": indexes})
    return people_with(keyring, subject, _by_person(dict(row) for row in rows))


async def consents_by_person(
    session: AsyncSession, indexes: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    """The consent rows of these people (by blind index), oldest first, by person."""
    return _by_person(await store.consents_of(session, indexes))


def _by_person(rows: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        found.setdefault(row["person_index"], []).append(row)
    return found


def person_index_of(keyring: Keyring, number: str) -> str:
    """The blind index of a normalized number (`person_index` normalizes one first)."""
    return blind_index(keyring, number, purpose=INDEX_PURPOSE)


def people_with(
    keyring: Keyring, subject: Subject, consents: Mapping[str, Sequence[Mapping[str, Any]]]
) -> list[Person]:
    """The members, each with the consents of `consents` (rows by person index) that count.

    Only a consent recorded for the household's region counts; a revocation counts wherever
    it was recorded (`after_revocations`).
    """
    people = []
    for member_id, number in subject.members:
        own = consents.get(person_index_of(keyring, number), ())
        region = {r["id"]: r["region"] for r in own}
        granted = after_revocations([to_consent(r) for r in own])
        counted = tuple(c for c in granted if region[c.id] == subject.region)
        people.append(Person(member_id, number, counted))
    return people


class NoConsent(Exception):
    """Not one member has a valid consent for one department asked: nothing may be called."""

    def __init__(self, members: list[dict[str, Any]]):
        super().__init__("no valid consent covers any member and department asked")
        self.members = members


class VerificationNotFound(Exception):
    """No such verification, or not in the caller's regions."""


class BatchNotFound(Exception):
    """No such batch, or not in the caller's regions."""


class HouseholdUnknown(Exception):
    """The registry has no such household in the caller's regions."""


def consent_overview(
    people: Sequence[Person], departments: Sequence[Department], *, on: date
) -> list[dict[str, Any]]:
    """For each member, the consent state of each department asked (masked numbers)."""
    return [
        {
            "member_id": p.member_id,
            "identity_number": mask_identity_number(p.identity_number),
            "consent": {
                d.value: consent_state(list(p.consents), d, on=on)[0].value for d in departments
            },
        }
        for p in people
    ]


@dataclass(frozen=True)
class Requested:
    """A check a caller asked for, ready to be filed (`file`): its row and event, each
    member's consents as the caller is shown them, and the members with the consents that
    count (for the run, if handed over)."""

    row: dict[str, Any]
    event: CloudEvent
    overview: list[dict[str, Any]]
    people: list[Person]


async def check_request(
    uow: UnitOfWork,
    ctx: Context,
    *,
    subject: Subject,
    purpose: str,
    departments: Sequence[Department],
    lease_seconds: float | None = None,
) -> Requested:
    """A check a caller asked for, made ready to file (claimed already, with
    `lease_seconds`, for a run the caller starts itself: `Verifier.hand_over`); refused
    outright when no consent covers anything. Nothing is written."""
    if not ctx.principal.covers(subject.region):
        raise RegionNotAllowed(subject.region)
    people = await people_of(uow, ctx.keyring, subject)
    overview = consent_overview(people, departments, on=ctx.today)
    if not any(state == "valid" for m in overview for state in m["consent"].values()):
        raise NoConsent(overview)
    row, event = _queued(
        household_id=subject.household_id,
        region=subject.region,
        purpose=purpose,
        departments=departments,
        trigger="api",
        requested_by=ctx.actor,
        members_cipher=encrypt(ctx.keyring, subject.to_json(), context=SUBJECT_CONTEXT),
    )
    if lease_seconds is not None:
        # If its run never ends, the lease runs out and the queue takes the row, as it takes
        # any abandoned run.
        row.update(
            status="running",
            attempts=1,
            claimed_until=row["requested_at"] + timedelta(seconds=lease_seconds),
        )
    return Requested(row, event, overview, people)


async def get_verification(uow: UnitOfWork, ctx: Context, verification_id: str) -> dict[str, Any]:
    row = await store.get_verification(uow.session, verification_id)
    if row is None or not ctx.principal.covers(row["region"]):
        raise VerificationNotFound(verification_id)
    return row


def verification_view(row: Mapping[str, Any]) -> dict[str, Any]:
    links = {"self": f"/v1/verifications/{row['id']}"}
    if row["report_version"]:
        links["report"] = f"/v1/verifications/{row['id']}/report"
    return {
        "id": row["id"],
        "household_id": row["household_id"],
        "region": row["region"],
        "status": row["status"],
        "trigger": row["trigger"],
        "purpose": row["purpose"],
        "departments": row["departments"],
        "batch_id": row["batch_id"],
        "requested_by": row["requested_by"],
        "requested_at": row["requested_at"],
        "finished_at": row["finished_at"],
        "reason": row["reason"],
        "report_version": row["report_version"],
        "refetch_at": row["refetch_at"],
        "links": links,
    }


# Verifications of a batch are written this many to a statement.
BATCH_CHUNK = 500


async def create_batch(
    uow: UnitOfWork,
    ctx: Context,
    *,
    household_ids: Sequence[str],
    filed: Collection[str],
    region: str,
    purpose: str,
    departments: Sequence[Department],
) -> dict[str, Any]:
    """批量核对: one verification per household, all queued at once under one batch.

    `filed` are the households the registry files in the batch's region: a household named
    but not among them is failed at once as not in the registry (never told where it is),
    and never verified.
    """
    parse_region(region)
    if not ctx.principal.covers(region):
        raise RegionNotAllowed(region)
    unique = list(dict.fromkeys(household_ids))
    outside = sum(h not in filed for h in unique)
    now = datetime.now(UTC)
    settled = outside == len(unique)
    batch: dict[str, Any] = {
        "id": new_event_id(),
        "region": region,
        "purpose": purpose,
        "requested_by": ctx.actor,
        "status": "completed" if settled else "running",
        "total": len(unique),
        "done": 0,
        "failed": outside,
        "cancelled": 0,
        "created_at": now,
        "finished_at": now if settled else None,
    }
    await store.insert_rows(uow.session, store.batch, [batch])
    for start in range(0, len(unique), BATCH_CHUNK):
        rows, events = [], []
        for household_id in unique[start : start + BATCH_CHUNK]:
            row, event = _queued(
                household_id=household_id,
                region=region,
                purpose=purpose,
                departments=departments,
                trigger="batch",
                requested_by=ctx.actor,
                batch_id=batch["id"],
            )
            if household_id not in filed:
                reason = f"household {household_id} is not in the registry"
                row.update(status="failed", reason=reason, finished_at=now)
                failed = VerificationFailed(row["id"], household_id, reason)
                event = to_cloudevent(failed, region=region, sequence=1)
            rows.append(row)
            events.append(event)
        await store.insert_rows(uow.session, store.verification, rows)
        uow.publish(*events)
    if settled and unique:
        publish_progress(uow, batch)
    return batch


async def get_batch(uow: UnitOfWork, ctx: Context, batch_id: str) -> dict[str, Any]:
    row = await store.get_batch(uow.session, batch_id)
    if row is None or not ctx.principal.covers(row["region"]):
        raise BatchNotFound(batch_id)
    return row


def batch_view(row: Mapping[str, Any], *, now: datetime) -> dict[str, Any]:
    progress = progress_event(row, now=now)
    return {
        **asdict(progress),
        "id": row["id"],
        "region": row["region"],
        "purpose": row["purpose"],
        "requested_by": row["requested_by"],
        "created_at": row["created_at"],
        "finished_at": row["finished_at"],
        "links": {
            "self": f"/v1/batches/{row['id']}",
            "results": f"/v1/batches/{row['id']}/results",
        },
    }


def progress_event(batch: Mapping[str, Any], *, now: datetime) -> BatchProgress:
    """Where a batch stands: counts, the rate so far and the time left at that rate."""
    settled = batch["done"] + batch["failed"] + batch["cancelled"]
    elapsed = max((now - as_utc(batch["created_at"])).total_seconds(), 1e-3)
    rate = (batch["done"] + batch["failed"]) / elapsed
    remaining = batch["total"] - settled
    eta = remaining / rate if rate > 0 and batch["status"] == "running" else None
    return BatchProgress(
        batch_id=batch["id"],
        status=batch["status"],
        total=batch["total"],
        done=batch["done"],
        failed=batch["failed"],
        cancelled=batch["cancelled"],
        rate_per_second=round(rate, 3),
        eta_seconds=round(eta, 1) if eta is not None else None,
    )


def publish_progress(uow: UnitOfWork, batch: Mapping[str, Any]) -> None:
    settled = batch["done"] + batch["failed"] + batch["cancelled"]
    event = progress_event(batch, now=datetime.now(UTC))
    uow.publish(to_cloudevent(event, region=batch["region"], sequence=settled))


async def cancel_batch(uow: UnitOfWork, ctx: Context, batch_id: str) -> dict[str, Any]:
    """Stop a batch: queued households are cancelled, running ones finish."""
    row = await get_batch(uow, ctx, batch_id)
    if row["status"] == "running":
        await store.cancel_batch(uow.session, batch_id)
        row = await get_batch(uow, ctx, batch_id)
        publish_progress(uow, row)
        await _audit(uow, ctx, action="batch.cancelled", target=batch_id, detail={})
    return row


async def queries_about(
    uow: UnitOfWork, ctx: Context, *, identity_number: str
) -> list[dict[str, Any]]:
    """Who looked at my data: every department query about one person, in the caller's regions."""
    index = person_index(ctx.keyring, identity_number, today=ctx.today)
    rows = await store.queries_about(uow.session, index)
    return [
        {
            "queried_at": r["queried_at"],
            "department": r["department"],
            "requested_by": r["requested_by"],
            "purpose": r["purpose"],
            "consent_id": r["consent_id"],
            "outcome": r["outcome"],
            "request_hash": r["request_hash"],
            "response_digest": r["response_digest"],
            "verification_id": r["verification_id"],
            "household_id": r["household_id"],
        }
        for r in rows
        if ctx.principal.covers(r["region"])
    ]


def normalized_number(identity_number: str, *, today: date) -> str:
    """The number in its canonical form (full-width digits folded, check character verified)."""
    return parse_identity_number(identity_number, today=today).number
