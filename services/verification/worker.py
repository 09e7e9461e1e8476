"""The verifier: runs queued verifications, re-asks departments that were down, rechecks yearly.

Requests are rows (`verification`, status `queued`); workers claim them with a lease, so a crash
loses nothing (the lease runs out and another worker takes the row) and several replicas share
the queue. Each run asks every department within consent, then in one transaction writes the
items, the encrypted raw answers, the query log, a report version, an audit record and the
`verification.completed` event — a transaction shared with the runs that finish meanwhile; a
run is done (its row completed) only once that transaction is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
import structlog
from nats.aio.client import Client as NATS

from services.verification import store
from services.verification.adapters.client import DepartmentClient
from services.verification.adapters.transport import HttpTransport, NatsTransport, Transport
from services.verification.checking import (
    Checked,
    Exchange,
    Person,
    check_household,
    check_person,
)
from services.verification.domain.departments import DEPARTMENTS, Department
from services.verification.domain.events import (
    VerificationCompleted,
    VerificationFailed,
    VerificationRequested,
)
from services.verification.domain.report import (
    Asset,
    Findings,
    Income,
    ItemStatus,
    Report,
    ReportItem,
    build_report,
    discrepancy_dict,
)
from services.verification.service import (
    SUBJECT_CONTEXT,
    Subject,
    consents_by_person,
    people_of,
    people_with,
    person_index_of,
    publish_progress,
    registry_purpose,
    request,
    subject_from_registry,
    to_cloudevent,
)
from services.verification.settings import VerificationSettings
from shared import audit
from shared.crypto import Keyring, decrypt, encrypt
from shared.db import Database, UnitOfWork, as_utc
from shared.events.envelope import CloudEvent, event_type
from shared.identity import feed_index, mask_identity_number
from shared.registry_client import (
    HouseholdNotFound,
    Households,
    RegistryClient,
    RegistryUnavailable,
)

if TYPE_CHECKING:
    from services.verification.metrics import VerificationMetrics

log = structlog.get_logger(__name__)
STOP_WITHIN = 10.0  # seconds for cancelled tasks to end when the service stops

WRITE_GROUP = 50  # reports written in one transaction at most
# Seconds between two tallies of a batch while its households finish: a tally counts all of
# the batch's rows (1.9 ms of PostgreSQL's time at 10,000), and tallies of a busy batch were
# about 5 % of the machine's CPU (bench/README.md, stop 33).
TALLY_EVERY = 0.5
# Rows a batch's tallies count a second at most: a region's 500,000 households tallied every
# TALLY_EVERY would cost PostgreSQL some 100 ms of every 500 (bench/README.md, stop 64).
TALLY_ROWS_PER_SECOND = 20_000
REQUESTED = event_type("verification", VerificationRequested.aggregate, VerificationRequested.name)
ANSWER_CONTEXT = "verification.raw_answer"
_NO_ANSWER = {"answer_cipher": None, "purge_after": None}
MISSING = (ItemStatus.UNAVAILABLE, ItemStatus.ERROR)


def tally_interval(total: int) -> float:
    """Seconds between two tallies of a busy batch of `total` households: `TALLY_EVERY`, or
    longer when its tallies would count more than `TALLY_ROWS_PER_SECOND` rows a second."""
    return max(TALLY_EVERY, total / TALLY_ROWS_PER_SECOND)


class NotVerifiable(Exception):
    """Nothing can be asked: the household is unknown, or no consent covers anything asked."""


class Departments:
    """A client per department, on the transport configuration names for it."""

    def __init__(self, settings: VerificationSettings, nc: NATS | None):
        # A pool per department, as large as its concurrency limit: every connection is kept
        # alive and reused, and no department's queries wait for another's connections.
        self._http: list[aiohttp.ClientSession] = []
        self.clients: dict[Department, DepartmentClient] = {}
        for department in Department:
            config = settings.department_config(department)
            transport: Transport
            if config.transport == "nats":
                if nc is None:
                    raise ValueError(f"{department.value}: NATS transport needs a NATS connection")
                transport = NatsTransport(nc)
            else:
                http = HttpTransport.session(connections=config.concurrency)
                self._http.append(http)
                transport = HttpTransport(http, settings.department_url(department))
            self.clients[department] = DepartmentClient(config, transport)

    def health(self) -> list[dict[str, Any]]:
        return [
            {
                **client.health(),
                "name_zh": DEPARTMENTS[department].name_zh,
                "holder_zh": DEPARTMENTS[department].holder_zh,
                "concurrency": client.config.concurrency,
                "timeout_seconds": client.config.timeout_seconds,
                "people_per_request": client.config.people_per_request,
            }
            for department, client in self.clients.items()
        ]

    async def aclose(self) -> None:
        for http in self._http:
            await http.close()


def item_from_report(row: Mapping[str, Any]) -> ReportItem:
    """An item as a stored report's body holds it (`store.latest_items`)."""
    found = row["findings"]
    return ReportItem(
        member_id=row["member_id"],
        department=Department(row["department"]),
        status=ItemStatus(row["status"]),
        source=row["source"],
        as_of=date.fromisoformat(row["as_of"]) if row["as_of"] else None,
        findings=Findings(
            incomes=tuple(Income(**i) for i in found["incomes"]),
            assets=tuple(Asset(**a) for a in found["assets"]),
            flags=frozenset(found["flags"]),
            facts=found["facts"],
            amounts=found["amounts"],
        )
        if found is not None
        else None,
        reason=row["reason"],
        request_hash=row["request_hash"],
    )


def completed_event(row: Mapping[str, Any], report: Report) -> VerificationCompleted:
    return VerificationCompleted(
        verification_id=row["id"],
        household_id=row["household_id"],
        report_version=report.version,
        content_hash=report.content_hash,
        per_capita_income_fen=report.per_capita_income_fen,
        income_complete=report.income_complete,
        asset_verdicts={k: v.value for k, v in report.asset_verdicts.items()},
        discrepancies=tuple(discrepancy_dict(d) for d in report.discrepancies),
        unavailable_departments=tuple(d.value for d in report.unavailable_departments),
        no_consent_departments=tuple(
            sorted({i.department.value for i in report.items if i.status is ItemStatus.NO_CONSENT})
        ),
    )


@dataclass(frozen=True)
class GroupRead:
    """What the claimed rows of a group share: their households, and their members' consent
    rows by person index."""

    households: Households
    consents: dict[str, list[dict[str, Any]]]


@dataclass(frozen=True)
class Handed:
    """What the API read for a run it hands over: the members, and their consents; and its
    row as stored once the request is committed (`NotFiled` if it is not)."""

    subject: Subject
    people: list[Person]
    filed: asyncio.Future[dict[str, Any]]


class NotFiled(Exception):
    """A request handed over before its commit was not committed: it has no report."""


@dataclass(frozen=True)
class _Made:
    """A report made from a run's answers, waiting to be written with its run's rows."""

    row: Mapping[str, Any]
    subject: Subject
    checked: Sequence[Checked]
    report: Report
    now: datetime

    @property
    def exchanges(self) -> list[Exchange]:
        return [c.exchange for c in self.checked if c.exchange is not None]


class Verifier:
    """Runs the verification queue and the background duties of the service."""

    def __init__(
        self,
        settings: VerificationSettings,
        db: Database,
        keyring: Keyring,
        departments: Departments,
        registry: RegistryClient,
        metrics: VerificationMetrics | None = None,
    ):
        self.metrics = metrics
        self.settings = settings
        self.db = db
        self.keyring = keyring
        self.departments = departments
        self.registry = registry
        self._feed_key = settings.feed_index_key.get_secret_value().encode()
        self._wake = asyncio.Event()
        self._wakes = 0  # wakes so far: commits that queued runs, the yearly recheck
        self._backlog = True  # the queue may hold runs due: a freed slot wakes its loop
        self._running: set[asyncio.Task[None]] = set()
        self._promised = 0  # slots promised to runs the API is about to hand over
        self._handing: set[str] = set()  # the rows of runs handed over, until their requests commit
        self._stopping = False
        self._reads: set[asyncio.Task[GroupRead]] = set()
        self._loops: list[asyncio.Task[None]] = []
        # Reports waiting to be written, each with its run's future, and their writer.
        self._to_write: list[tuple[_Made, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        # The tasks tallying batches, and the batches whose count moved since their last tally.
        self._tallies: dict[str, asyncio.Task[None]] = {}
        self._tally_again: set[str] = set()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._loops = [
            asyncio.create_task(self._queue_loop(), name="verification-queue"),
            self._every(min(self.settings.refetch_seconds, 5.0), self.refetch_due, "refetch"),
            self._every(self.settings.recheck_poll_seconds, self.recheck_due, "recheck"),
            self._every(3600, self.purge, "purge"),
            self._every(self.settings.batch_tally_seconds, self.tally_running, "batch-tally"),
        ]

    async def stop(self) -> None:
        """Cancel every loop, run and read; give them `STOP_WITHIN` seconds to end.

        A service must stop on SIGTERM at any point: a task that outlives its cancellation (the
        queue loop did, see `_queue_loop`) is named in the log and left, rather than holding
        the shutdown for ever. Its claimed row's lease runs out.
        """
        self._stopping = True  # a run handed over now is left to its lease
        tasks = self.tasks()
        for task in tasks:
            task.cancel()
        if not tasks:
            return
        done, pending = await asyncio.wait(tasks, timeout=STOP_WITHIN)
        for task in done:
            if not task.cancelled():
                task.exception()  # retrieved: what a run raised was logged where it ran
        for task in pending:
            log.error("verification.task_did_not_stop", task=task.get_name(), stack=repr(task))

    def tasks(self) -> list[asyncio.Task[Any]]:
        """Its loops, runs, shared registry reads, report writer and tallies not ended."""
        writer = [self._writer] if self._writer else []
        tasks = (*self._loops, *self._running, *self._reads, *writer, *self._tallies.values())
        return [t for t in tasks if not t.done()]

    def _every(
        self, seconds: float, duty: Callable[[], Awaitable[int]], name: str
    ) -> asyncio.Task[None]:
        """Run a background duty now and then every `seconds`; a failure is logged, not fatal."""

        async def loop() -> None:
            while True:
                try:
                    await duty()
                except Exception:  # noqa: BLE001 - the next round tries again
                    log.exception("verification.duty_failed", duty=name)
                await asyncio.sleep(seconds)

        return asyncio.create_task(loop(), name=f"verification-{name}")

    def wake(self) -> None:
        """A request was committed: look at the queue now rather than at the next poll."""
        self._wakes += 1
        self._backlog = True
        self._wake.set()

    def committed(self, events: Sequence[CloudEvent]) -> None:
        """After a commit: wake the queue if it queued a check (one not being handed over).

        A claim after every commit took the one SQLite connection just as the relay went to
        publish the commit's events: a single household's report waited 3.5 ms for it
        (bench/verification.py).
        """
        if any(e.type == REQUESTED and e.subject not in self._handing for e in events):
            self.wake()

    # -- the queue -------------------------------------------------------------------------

    async def _queue_loop(self) -> None:
        settings = self.settings
        while True:
            claimed: list[dict[str, Any]] = []
            wakes = self._wakes  # a wake during the claim may be for a row it did not see
            free = settings.workers - len(self._running) - self._promised
            if free > 0:
                try:
                    async with self.db.unit_of_work() as uow:
                        claimed = await store.claim_queued(
                            uow.session, limit=free, lease_seconds=settings.lease_seconds
                        )
                        await uow.commit()
                except Exception:  # noqa: BLE001 - a database blip must not end the loop
                    log.exception("verification.claim_failed")
                else:
                    # Drained unless it filled every free slot: a freed slot then has no
                    # claim to make until a commit queues more (`wake`) or the poll comes.
                    self._backlog = len(claimed) >= free or self._wakes != wakes
            reads = self._read_households(claimed)
            for row in claimed:
                self._start(row, reads.get(row["id"]))
            if (not claimed or free <= len(claimed)) and self._wakes == wakes:
                self._wake.clear()
                # Not `wait_for`: on Python 3.11 it returns the result of a wait that ended in
                # the tick its task was cancelled, and drops the cancellation. A commit's wake
                # just before `stop` then kept this loop running, and `stop` waiting, for ever.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(settings.poll_seconds):
                        await self._wake.wait()

    def _start(
        self,
        row: dict[str, Any],
        read: asyncio.Task[GroupRead] | None = None,
        handed: Handed | None = None,
    ) -> None:
        task = asyncio.create_task(
            self._guarded(self._attempt, row, read, handed), name=f"verification-run-{row['id']}"
        )
        self._running.add(task)
        task.add_done_callback(self._finished)

    def promise_run(self) -> float | None:
        """A slot for a run the API will hand over: the lease to write its row claimed for,
        or None when every slot is taken (the row is queued then)."""
        if self._stopping or self.settings.workers - len(self._running) - self._promised <= 0:
            return None
        self._promised += 1
        return self.settings.lease_seconds

    def hand_over(
        self,
        row: dict[str, Any],
        subject: Subject,
        people: list[Person],
        filed: asyncio.Future[dict[str, Any]],
    ) -> None:
        """Run a row made claimed (`promise_run`), about to be committed, with the members
        and consents its request read.

        The run asks the departments while the request is written and committed (2 ms of a
        single household's, bench/verification.py), and writes nothing before `filed` has
        the row as stored.
        """
        self._promised -= 1
        verification_id = row["id"]
        self._handing.add(verification_id)  # so that its commit sends the queue to claim nothing

        def settled(_: asyncio.Future[dict[str, Any]]) -> None:
            self._handing.discard(verification_id)
            if not filed.cancelled():
                filed.exception()  # retrieved: a run not started (stopping) never awaits it

        filed.add_done_callback(settled)
        if not self._stopping:  # else its lease runs out and the queue takes it
            self._start(row, handed=Handed(subject, people, filed))

    def withdraw_promise(self) -> None:
        """The promised run's request failed before it was handed over: its slot is free
        again."""
        self._promised -= 1
        self._slot_freed()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._slot_freed()

    def _slot_freed(self) -> None:
        if self._backlog:  # else the queue's last claim emptied it: nothing waits for a slot
            self._wake.set()

    async def _guarded(self, step: Any, row: dict[str, Any], *args: Any) -> None:
        try:
            await step(row, *args)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the lease runs out and the row is tried again
            log.exception("verification.step_failed", verification_id=row["id"])

    def _read_households(
        self, rows: Sequence[Mapping[str, Any]]
    ) -> dict[str, asyncio.Task[GroupRead]]:
        """One registry read for the households of all the claimed rows that need one.

        A batch's rows arrive by the dozen: one `households:batch-get` per purpose (the
        registry audits each clear read with it) instead of a file read and a declarations
        read per household. Each row's run awaits the shared read; a row whose run is
        cancelled does not cancel the others' read.
        """
        wanted: dict[str, list[Mapping[str, Any]]] = {}
        for row in rows:
            if not row["members_cipher"] and row["attempts"] <= self.settings.max_attempts:
                wanted.setdefault(registry_purpose(row["purpose"]), []).append(row)
        reads: dict[str, asyncio.Task[GroupRead]] = {}
        for purpose, group in wanted.items():
            read = asyncio.create_task(
                self._read_group([r["household_id"] for r in group], purpose=purpose),
                name="verification-registry-read",
            )
            self._reads.add(read)
            read.add_done_callback(self._read_done)
            reads.update((r["id"], read) for r in group)
        return reads

    async def _read_group(self, household_ids: list[str], *, purpose: str) -> GroupRead:
        """The households' files and declarations, then their members' consents, in one query
        for the group rather than one a run (a ninth of the event loop's time in a batch)."""
        found = await self.registry.households(
            household_ids, pii=True, purpose=purpose, declarations=True
        )
        indexes = [
            person_index_of(self.keyring, member["identity_number"])
            for household in found.files.values()
            for member in household["members"]
        ]
        async with self.db.unit_of_work() as uow:
            consents = await consents_by_person(uow.session, indexes)
        return GroupRead(found, consents)

    def _read_done(self, read: asyncio.Task[GroupRead]) -> None:
        self._reads.discard(read)
        if not read.cancelled():
            read.exception()  # retrieved here; each row's run raises it on its own

    async def _attempt(
        self,
        row: dict[str, Any],
        read: asyncio.Task[GroupRead] | None = None,
        handed: Handed | None = None,
    ) -> None:
        """Run a claimed verification; one that raises is tried again later, a few times."""
        limit = self.settings.max_attempts
        if row["attempts"] > limit:  # its worker stopped while running it, `limit` times
            await self._fail(row, f"gave up after {limit} attempts: its runs never finished")
            return
        try:
            await self.run(row, read, handed)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - counted, and tried again or failed for good
            log.exception(
                "verification.attempt_failed", verification_id=row["id"], attempt=row["attempts"]
            )
            await self._retry_later(row, f"{type(exc).__name__}: {exc}")

    async def filed_household(
        self, household_id: str, *, inside: Callable[[str], bool]
    ) -> dict[str, Any]:
        """The household's masked file if its region is `inside`; else HouseholdNotFound.

        Read without `pii:read`, so that looking where a household is filed reads no number and
        leaves no audit record at the registry: the clear read comes only once it is inside.
        """
        household = await self.registry.household(household_id)
        if not inside(household["location"]["region"]):
            raise HouseholdNotFound(household_id)
        return household

    async def resolve(
        self, row: Mapping[str, Any], read: asyncio.Task[GroupRead] | None = None
    ) -> Subject:
        """The members to check: stored with the request, or read from the registry now
        (or by `read`, the claimed rows' shared read).

        A household is verified only where it is filed: one no longer in the verification's
        region (a batch's were checked when it was made) is "not in the registry", as one that
        is not there at all.
        """
        if row["members_cipher"]:
            text = decrypt(self.keyring, row["members_cipher"], context=SUBJECT_CONTEXT)
            return Subject.from_json(text)
        household_id = row["household_id"]
        missing = NotVerifiable(f"household {household_id} is not in the registry")
        if read is not None:
            found = (await asyncio.shield(read)).households
            if household_id not in found.files:
                raise missing
            household = found.files[household_id]
            declarations = found.declarations.get(household_id, [])
        else:
            try:
                household = await self.registry.household(
                    household_id, pii=True, purpose=registry_purpose(row["purpose"])
                )
                declarations = await self.registry.declarations(household_id)
            except HouseholdNotFound as exc:
                raise missing from exc
        subject = subject_from_registry(household, declarations)
        if subject.region != row["region"]:
            raise missing
        return subject

    async def run(
        self,
        row: dict[str, Any],
        read: asyncio.Task[GroupRead] | None = None,
        handed: Handed | None = None,
    ) -> None:
        """One verification, first report version."""
        if handed is not None:
            subject, people = handed.subject, handed.people
        else:
            try:
                subject = await self.resolve(row, read)
            except RegistryUnavailable as exc:
                await self._retry_later(row, str(exc))
                return
            except NotVerifiable as exc:
                await self._fail(row, str(exc))
                return
            if read is not None:  # the group's consents were read with its households
                people = people_with(self.keyring, subject, (await asyncio.shield(read)).consents)
            else:
                async with self.db.unit_of_work() as uow:
                    people = await people_of(uow, self.keyring, subject)
        departments = [Department(d) for d in row["departments"]]
        checked = await check_household(
            people,
            self.departments.clients,
            departments=departments,
            purpose=row["purpose"],
            on=date.today(),
        )
        if handed is not None:
            try:
                row = await handed.filed
            except NotFiled as exc:
                await self._file_failed(row, subject, checked, str(exc))
                return
        if all(c.exchange is None for c in checked):
            await self._fail(row, "no valid consent covers any member and department asked")
            return
        try:
            await self._record_or_log(row, subject, checked, previous=[])
        finally:
            # The departments' figures once the report is written, not on the way to it: a
            # household's 44 exchanges cost a single one 0.3 ms (bench/verification.py).
            if self.metrics:
                self.metrics.record(checked)

    async def _record_or_log(
        self,
        row: Mapping[str, Any],
        subject: Subject,
        checked: Sequence[Checked],
        *,
        previous: Sequence[ReportItem],
    ) -> None:
        """Record the answers; if that fails, the questions put are still logged, then it raises.

        Every question put to a department about a person is in the query log ("who looked at
        my data"), even when no report could be made of the answers.
        """
        try:
            await self._record(row, subject, checked, previous=previous)
        except Exception:
            await self._log_queries(row, subject, checked)
            raise

    async def _log_queries(
        self, row: Mapping[str, Any], subject: Subject, checked: Sequence[Checked]
    ) -> None:
        """Write the questions put to departments in this run to the query log, on their own."""
        async with self.db.unit_of_work() as uow:
            await store.insert_rows(
                uow.session, store.department_query, self._query_rows(row, subject, checked)
            )
            await uow.commit()

    async def _file_failed(
        self, row: Mapping[str, Any], subject: Subject, checked: Sequence[Checked], reason: str
    ) -> None:
        """A run handed over whose request was not committed: its row is written failed with
        the questions it put, which are who looked at the members' data all the same."""
        failed = {
            **row,
            "status": "failed",
            "reason": f"its request was not committed: {reason}",
            "claimed_until": None,
            "finished_at": datetime.now(UTC),
        }
        async with self.db.unit_of_work() as uow:
            await store.insert_verification(uow.session, failed)
            await store.insert_rows(
                uow.session, store.department_query, self._query_rows(row, subject, checked)
            )
            await uow.commit()
        log.warning("verification.not_filed", verification_id=row["id"], reason=reason)

    def _query_rows(
        self,
        row: Mapping[str, Any],
        subject: Subject,
        checked: Sequence[Checked],
        *,
        answers: bool = False,
    ) -> list[dict[str, Any]]:
        """The query log's rows for the questions put to departments in this run; with the
        answers, encrypted, kept for `raw_answer_retention_days` if a report is made of them."""
        # A member's index once, not once per department: an HMAC each (0.3 ms a household).
        indexes = {m: person_index_of(self.keyring, n) for m, n in subject.members}
        kept = timedelta(days=self.settings.raw_answer_retention_days)
        return [
            {
                "person_index": indexes[e.member_id],
                "verification_id": row["id"],
                "member_id": e.member_id,
                "department": e.department.value,
                "consent_id": e.consent_id,
                "purpose": row["purpose"],
                "requested_by": row["requested_by"],
                "outcome": e.outcome.value,
                "request_hash": e.request_hash,
                "response_digest": e.response_digest,
                "queried_at": e.at,
                **(
                    {
                        "answer_cipher": encrypt(
                            self.keyring, e.raw.decode(errors="replace"), context=ANSWER_CONTEXT
                        ),
                        "purge_after": e.at + kept,
                    }
                    if answers and e.raw is not None
                    else _NO_ANSWER
                ),
            }
            for e in (c.exchange for c in checked)
            if e is not None
        ]

    async def _record(
        self,
        row: Mapping[str, Any],
        subject: Subject,
        checked: Sequence[Checked],
        *,
        previous: Sequence[ReportItem],
    ) -> Report:
        """Write the answers and a new report version with its events, in a transaction with
        the reports of other runs that finish meanwhile; back once it is committed."""
        settings, now = self.settings, datetime.now(UTC)
        version = row["report_version"] + 1
        fresh = {(c.item.member_id, c.item.department): c.item for c in checked}
        items = [i for i in previous if (i.member_id, i.department) not in fresh]
        items += list(fresh.values())
        items.sort(key=lambda i: (i.member_id, i.department.value))
        report = build_report(
            household_id=subject.household_id or "",
            version=version,
            member_ids=[m for m, _ in subject.members],
            items=items,
            declared=subject.declared,
            limits=settings.limits_for(subject.region),
            discrepancy_threshold_fen=settings.discrepancy_threshold_fen,
        )
        made = _Made(row, subject, checked, report, now=now)
        committed = asyncio.get_running_loop().create_future()
        self._to_write.append((made, committed))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_groups(), name="verification-writer")
        await committed
        if version == 1 and row["batch_id"]:
            self.tally(row["batch_id"])
        if self.metrics and version == 1:
            self.metrics.completed.labels(outcome="completed").inc()
            waited = (now - as_utc(row["requested_at"])).total_seconds()
            self.metrics.verification_duration.observe(waited)
        log.info(
            "verification.reported",
            verification_id=row["id"],
            version=version,
            unavailable=[d.value for d in report.unavailable_departments],
        )
        return report

    async def _write_groups(self) -> None:
        """Write the reports waiting, up to `WRITE_GROUP` to a write, until none waits.

        A batch's households finish by the dozen a second, and a transaction each (with
        aiosqlite's thread hop per statement) was a third of the service's CPU. A group that
        fails is written report by report, so that one bad report fails only its own run.
        """
        while self._to_write:
            group: list[tuple[_Made, asyncio.Future[None]]] = []
            outcomes: list[Exception | None]
            try:
                async with self.db.unit_of_work(one_write=True) as uow:  # see `_write`
                    # Taken once the connection is ours: the reports that finished while it
                    # was busy go in this transaction too.
                    await uow.session.connection()
                    group = self._to_write[:WRITE_GROUP]
                    del self._to_write[:WRITE_GROUP]
                    await self._write(uow, [made for made, _ in group])
                    await uow.commit()
                outcomes = [None] * len(group)
            except Exception as exc:  # noqa: BLE001 - each run is told of its own failure
                if not group:  # no connection: the first waiting report fails, the rest wait
                    group = self._to_write[:1]
                    del self._to_write[:1]
                if len(group) == 1:
                    outcomes = [exc]
                else:
                    log.warning(
                        "verification.group_write_failed", reports=len(group), exc=repr(exc)
                    )
                    outcomes = [await self._write_alone(made) for made, _ in group]
            for (_, committed), outcome in zip(group, outcomes, strict=True):
                if committed.done():  # its run was cancelled (its report may be written)
                    continue
                if outcome is None:
                    committed.set_result(None)
                else:
                    committed.set_exception(outcome)

    async def _write_alone(self, made: _Made) -> Exception | None:
        try:
            async with self.db.unit_of_work(one_write=True) as uow:
                await self._write(uow, [made])
                await uow.commit()
        except Exception as exc:  # noqa: BLE001 - raised in its run
            return exc
        return None

    async def _write(self, uow: UnitOfWork, group: Sequence[_Made]) -> None:
        """The query log with the encrypted answers, report (with its items), verification,
        followed households and people, events and audit records of these reports.

        A unit of one write (`Database.unit_of_work(one_write=True)`): on PostgreSQL one
        statement, committed on its own, with no BEGIN and COMMIT (`store.write_reports`); its
        rows are found by key, so PostgreSQL keeps its generic plan (planning each of a 44-row
        insert's executions anew made it 0.93 ms, 0.68 ms with the cached plan).
        """
        session = uow.session
        for made in group:
            uow.publish(
                to_cloudevent(
                    completed_event(made.row, made.report),
                    region=made.row["region"],
                    sequence=made.report.version,
                )
            )
        verified = [made for made in group if made.subject.household_id]
        await store.write_reports(
            session,
            queries=[
                q
                for made in group
                for q in self._query_rows(made.row, made.subject, made.checked, answers=True)
            ],
            reports=[
                {
                    "verification_id": made.row["id"],
                    "version": made.report.version,
                    "household_id": made.subject.household_id,
                    "content_hash": made.report.content_hash,
                    "body": report_body(made.row, made.subject, made.report, created_at=made.now),
                    "created_at": made.now,
                }
                for made in group
            ],
            completed=[self._completed(made) for made in group],
            watched=[
                {
                    "household_id": made.subject.household_id,
                    "region": made.subject.region,
                    "last_verified_at": made.now,
                }
                for made in verified
            ],
            feed_indexes={
                made.subject.household_id or "": [
                    feed_index(n, key=self._feed_key) for _, n in made.subject.members
                ]
                for made in verified
            },
            events=uow.take_events(),
            audit_entries=[
                audit.AuditEntry(
                    client_id=made.row["requested_by"],
                    action="verification.report",
                    target=made.row["id"],
                    outcome="success",
                    at=made.now,
                    purpose=made.row["purpose"],
                    detail={
                        "report_version": made.report.version,
                        "content_hash": made.report.content_hash,
                        "exchanges": [
                            {
                                "member_id": e.member_id,
                                "department": e.department.value,
                                "consent_id": e.consent_id,
                                "at": e.at.isoformat(),
                                "outcome": e.outcome.value,
                                "request_hash": e.request_hash,
                                "response_digest": e.response_digest,
                            }
                            for e in made.exchanges
                        ],
                    },
                )
                for made in group
            ],
            profile=self.keyring.profile,
        )

    def _completed(self, made: _Made) -> dict[str, Any]:
        """The verification row's new values once its report is written."""
        row, settings, now = made.row, self.settings, made.now
        first = made.report.version == 1
        interval = (
            settings.refetch_seconds
            if first
            else 2 * (row["refetch_interval_seconds"] or settings.refetch_seconds)
        )
        missing = any(i.status in MISSING for i in made.report.items)
        return {
            "id": row["id"],
            "status": "completed",
            "report_version": made.report.version,
            "reason": None,
            "members_cipher": encrypt(
                self.keyring, made.subject.to_json(), context=SUBJECT_CONTEXT
            ),
            "claimed_until": None,
            "finished_at": now if first else row["finished_at"],
            "refetch_at": now + timedelta(seconds=interval) if missing else None,
            "refetch_interval_seconds": interval if missing else None,
        }

    async def _retry_later(self, row: Mapping[str, Any], reason: str) -> None:
        """Queue the verification again after a doubling delay, or fail it past its attempts."""
        if row["attempts"] >= self.settings.max_attempts:
            await self._fail(row, f"gave up after {row['attempts']} attempts: {reason}")
            return
        delay = min(self.settings.retry_seconds * 2 ** (row["attempts"] - 1), 3600)
        async with self.db.unit_of_work() as uow:
            await store.update_verification(
                uow.session,
                row["id"],
                status="queued",
                reason=reason,
                claimed_until=None,
                not_before=datetime.now(UTC) + timedelta(seconds=delay),
            )
            await uow.commit()

    async def _fail(self, row: Mapping[str, Any], reason: str) -> None:
        async with self.db.unit_of_work() as uow:
            await store.update_verification(
                uow.session,
                row["id"],
                status="failed",
                reason=reason,
                claimed_until=None,
                finished_at=datetime.now(UTC),
            )
            uow.publish(
                to_cloudevent(
                    VerificationFailed(row["id"], row["household_id"], reason),
                    region=row["region"],
                    sequence=row["report_version"] + 1,
                )
            )
            await uow.commit()
        if row["batch_id"]:
            self.tally(row["batch_id"])
        if self.metrics:
            self.metrics.completed.labels(outcome="failed").inc()
        log.info("verification.failed", verification_id=row["id"], reason=reason)

    def tally(self, batch_id: str) -> None:
        """Bring a batch's counts up to date soon, in a task of its own: now if no tally of
        it runs, else once that one is done and `tally_interval` has passed.

        A tally counts all the batch's rows, and its households finish by the dozen a second:
        one tally each was O(batch) per household, and a run that tallied for the others kept
        its slot meanwhile. The households finished until the next tally are counted by it.
        """
        self._tally_again.add(batch_id)
        if batch_id not in self._tallies and not self._stopping:
            self._tallies[batch_id] = asyncio.create_task(
                self._tally_while_moving(batch_id), name=f"verification-tally-{batch_id}"
            )

    async def _tally_while_moving(self, batch_id: str) -> None:
        total = 0
        try:
            while batch_id in self._tally_again:
                self._tally_again.discard(batch_id)
                try:
                    total = await self._tally_once(batch_id) or total
                except Exception:  # noqa: BLE001 - the periodic duty tallies running batches
                    log.exception("verification.tally_failed", batch_id=batch_id)
                await asyncio.sleep(tally_interval(total))
        finally:
            del self._tallies[batch_id]

    async def _tally_once(self, batch_id: str) -> int | None:
        """Bring a batch's counts up to date in a short transaction of its own; announce
        progress each `progress_every` households settled, and the end. The batch's size if
        its counts moved."""
        async with self.db.unit_of_work() as uow:
            moved = await store.tally_batch(uow.session, batch_id)
            if moved:
                before, after = moved
                every = self.settings.progress_every
                crossed = store.settled(after) // every > store.settled(before) // every
                if crossed or after["status"] != before["status"]:
                    publish_progress(uow, after)
            await uow.commit()
        return moved[1]["total"] if moved else None

    async def tally_running(self) -> int:
        """Tally every running batch: a tally lost to a crash is made up here."""
        async with self.db.unit_of_work() as uow:
            batch_ids = await store.running_batch_ids(uow.session)
        for batch_id in batch_ids:
            self.tally(batch_id)
        return len(batch_ids)

    # -- departments that come back --------------------------------------------------------

    async def refetch_due(self) -> int:
        """Ask again for the items of every verification whose retry is due."""
        async with self.db.unit_of_work() as uow:
            rows = await store.claim_refetches(
                uow.session, limit=self.settings.workers, lease_seconds=self.settings.lease_seconds
            )
            await uow.commit()
        await asyncio.gather(*(self._guarded(self.refetch, row) for row in rows))
        return len(rows)

    async def refetch(self, row: dict[str, Any]) -> None:
        """Re-ask the missing items; a new report version only if an answer arrived.

        A run that raises counts as one without an answer: asked again later, given up in time.
        """
        try:
            if await self._refetch(row):
                return
        except Exception:  # noqa: BLE001 - retried at the next interval, like no answer
            log.exception("verification.refetch_failed", verification_id=row["id"])
        await self._refetch_later(row)

    async def _refetch(self, row: dict[str, Any]) -> bool:
        """Whether an answer arrived (and a new report version was recorded)."""
        subject = await self.resolve(row)
        async with self.db.unit_of_work() as uow:
            previous = [
                item_from_report(r) for r in await store.latest_items(uow.session, row["id"])
            ]
            people = {p.member_id: p for p in await people_of(uow, self.keyring, subject)}
        missing = [i for i in previous if i.status in MISSING and i.member_id in people]
        checked = await asyncio.gather(
            *(
                check_person(
                    people[i.member_id],
                    i.department,
                    self.departments.clients[i.department],
                    purpose=row["purpose"],
                    on=date.today(),
                )
                for i in missing
            )
        )
        if self.metrics:
            self.metrics.record(checked)
        if any(c.item.status is ItemStatus.OK for c in checked):
            await self._record_or_log(row, subject, checked, previous=previous)
            return True
        await self._log_queries(row, subject, checked)
        return False

    async def _refetch_later(self, row: Mapping[str, Any]) -> None:
        now = datetime.now(UTC)
        interval = 2 * (row["refetch_interval_seconds"] or self.settings.refetch_seconds)
        give_up = as_utc(row["finished_at"]) + timedelta(hours=self.settings.refetch_give_up_hours)
        async with self.db.unit_of_work() as uow:
            await store.update_verification(
                uow.session,
                row["id"],
                refetch_at=now + timedelta(seconds=interval) if now < give_up else None,
                refetch_interval_seconds=interval,
            )
            await uow.commit()

    # -- yearly recheck and purge ----------------------------------------------------------

    async def recheck_due(self, *, today: date | None = None) -> int:
        """Queue a check of every enrolled household last verified over `recheck_days` ago."""
        today = today or date.today()
        before = datetime.combine(today, datetime.min.time(), UTC) - timedelta(
            days=self.settings.recheck_days
        )
        async with self.db.unit_of_work() as uow:
            due = await store.due_for_recheck(uow.session, before=before, limit=1000)
            started = 0
            for household in due:
                started += bool(
                    await request(
                        uow,
                        household_id=household["household_id"],
                        region=household["region"],
                        purpose="年度复核 (yearly recheck)",
                        departments=list(Department),
                        trigger="recheck",
                        cause=f"recheck:{household['household_id']}:{today.isoformat()}",
                        requested_by="service:verification",
                    )
                )
            await uow.commit()
        if started:
            self.wake()
        return started

    async def purge(self, *, now: datetime | None = None) -> int:
        """Delete raw answers past their keeping time; the reports built from them stay."""
        async with self.db.unit_of_work() as uow:
            purged = await store.purge_raw_answers(uow.session, before=now or datetime.now(UTC))
            await uow.commit()
        if purged:
            log.info("verification.raw_answers_purged", count=purged)
        return purged


def report_body(
    row: Mapping[str, Any], subject: Subject, report: Report, *, created_at: datetime
) -> dict[str, Any]:
    """The stored report: the domain report plus who, why and under which limits — no numbers."""
    return {
        "verification_id": row["id"],
        "household_id": subject.household_id,
        "region": subject.region,
        "purpose": row["purpose"],
        "trigger": row["trigger"],
        "requested_by": row["requested_by"],
        "version": report.version,
        "content_hash": report.content_hash,
        "created_at": created_at.isoformat(),
        "members": [
            {"member_id": m, "identity_number": mask_identity_number(n)} for m, n in subject.members
        ],
        # The hashed JSON itself, as its text: no parse and write again (0.3 ms a report).
        "report": orjson.Fragment(report.canonical),
    }
