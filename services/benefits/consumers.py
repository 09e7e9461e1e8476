"""The benefits service's event handlers: registry households and verification reports."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date

import structlog

from services.benefits import service, store
from services.benefits.schemas import HouseholdIn
from services.benefits.service import Engine
from services.benefits.settings import BenefitsSettings
from shared.auth import Principal
from shared.db import UnitOfWork
from shared.events.consumer import Handler, Subscription, Wanted
from shared.events.envelope import CloudEvent
from shared.observability import current_traceparent
from shared.regions import FILING_PROVINCES
from shared.registry_client import ATTACHED_RESULTS

log = structlog.get_logger(__name__)

# Events after which the household's circumstances may differ: fetch them again.
REFETCH = {"applied", "changed", "member_added", "member_removed", "enrolled", "approved"}


def _context(settings: BenefitsSettings, engine: Engine) -> service.Context:
    """The service acting for itself, across all regions (the event's region is the file's)."""
    provinces = tuple(sorted(FILING_PROVINCES))
    principal = Principal("service:benefits", frozenset(), provinces)
    return service.Context(
        principal=principal,
        engine=engine,
        today=date.today(),
        profile=settings.suite.crypto_profile,
    )


def _refetches(settings: BenefitsSettings, event: CloudEvent) -> bool:
    name, fields = event.type.split(".")[-2], set(event.data.get("fields") or ())
    if name == "changed" and fields and fields <= ATTACHED_RESULTS:
        # Only another service's result landed on the file (benefits' own card among them):
        # reading the file again would decide the same card once more.
        return False
    return settings.follow_registry and name in REFETCH


def household_events_wanted(settings: BenefitsSettings) -> Wanted:
    """The household events the handler acts on (`Subscription.wanted`): a month's income, and
    the changes after which the file is read again. The others (an exit, another service's
    result attached: one for each verification completed and each card benefits decided) are
    acknowledged with no inbox row and no transaction."""

    async def wanted(events: list[CloudEvent], uow: UnitOfWork) -> set[str]:
        return {
            event.id
            for event in events
            if event.type.split(".")[-2] == "income_recorded" or _refetches(settings, event)
        }

    return wanted


@dataclass(frozen=True)
class Read:
    """Registry files read ahead of a batch: the households asked for, and those found."""

    asked: frozenset[str]
    files: dict[str, HouseholdIn]


class HouseholdBatches:
    """The household consumer's batch scope: the registry's files of the households a fetched
    batch of events names, read for the whole batch in one call, and the households whose
    holding and card are left to the batch's end, to be done for all of them at once
    (`service.hold_and_decide`). An event handled on its own reads its household alone and
    does its work at once.

    A batch's events of one household see the same file, read after they were all published:
    the newest, as each of them would have read it one by one. Work left to the end is done
    before any other of the batch's events touches the households (`flush`), so the events'
    effects follow their order as one by one.
    """

    def __init__(self, settings: BenefitsSettings, engine: Engine):
        self._settings = settings
        self._engine = engine
        self._files: dict[str, HouseholdIn] | None = None
        self._uow: UnitOfWork | None = None
        self._pending: dict[str, service.Filed] = {}

    async def read_ahead(self, events: list[CloudEvent]) -> Read:
        """The files the batch of `events` will want, read before it is handled."""
        wanted = self._wanted(events)
        files = await service.fetch_households(self._settings, wanted, on=date.today())
        return Read(asked=frozenset(wanted), files=files)

    @contextlib.asynccontextmanager
    async def scope(
        self, events: list[CloudEvent], uow: UnitOfWork, ahead: object
    ) -> AsyncIterator[None]:
        wanted = self._wanted(events)
        read = ahead if isinstance(ahead, Read) else Read(asked=frozenset(), files={})
        files = {h: read.files[h] for h in wanted if h in read.files}
        missing = [h for h in wanted if h not in read.asked]
        files |= await service.fetch_households(self._settings, missing, on=date.today())
        self._files = files
        self._uow = uow
        try:
            yield
            await self.flush()
        finally:
            self._files, self._uow, self._pending = None, None, {}

    def _wanted(self, events: list[CloudEvent]) -> list[str]:
        return [str(e.data["household_id"]) for e in events if _refetches(self._settings, e)]

    async def household(self, household_id: str, *, on: date) -> HouseholdIn | None:
        """The file as inputs, None when the registry has none."""
        if self._files is not None:
            return self._files.get(household_id)
        return await service.fetch_household(self._settings, household_id, on=on)

    def defer(self, household: HouseholdIn) -> bool:
        """Leave holding this household and deciding its card to the end of the batch, in the
        trace of the event being handled; False outside a batch, or when the batch has it
        pending already (the caller does it now, after `flush`)."""
        household_id = str(household.household_id)
        if self._files is None or household_id in self._pending:
            return False
        self._pending[household_id] = service.Filed(household, current_traceparent())
        return True

    async def flush(self) -> None:
        """Hold and decide the households left pending, in their order."""
        if not self._pending:
            return
        assert self._uow is not None
        pending, self._pending = list(self._pending.values()), {}
        await service.hold_and_decide(self._uow, _context(self._settings, self._engine), pending)


def household_handler(
    settings: BenefitsSettings, engine: Engine, batches: HouseholdBatches
) -> Handler:
    async def on_household(event: CloudEvent, uow: UnitOfWork) -> None:
        """household.*: a month's income re-evaluates 脱困; a change re-decides the card."""
        name = event.type.split(".")[-2]
        household_id = str(event.data["household_id"])
        ctx = _context(settings, engine)
        if name == "income_recorded":
            await batches.flush()  # the batch's earlier households first
            await service.record_income(
                uow,
                household_id=household_id,
                region=event.region,
                month=str(event.data["month"]),
                income_fen=int(event.data["income_fen"]),
                member_count=int(event.data["member_count"]),
                engine=engine,
                today=ctx.today,
            )
        elif _refetches(settings, event):
            household = await batches.household(household_id, on=ctx.today)
            if household is None:
                log.info("benefits.household_gone", household_id=household_id)
                return
            if batches.defer(household):
                return
            await batches.flush()
            await service.put_household(uow, ctx, household)
            await service.decide_household(uow, ctx, household_id)

    return on_household


def verification_handler(settings: BenefitsSettings, engine: Engine) -> Handler:
    async def on_verification_completed(event: CloudEvent, uow: UnitOfWork) -> None:
        """核对报告: its per-capita income wins over the declared one from now on."""
        household_id = str(event.data["household_id"])
        if event.data.get("per_capita_income_fen") is None:
            return  # no income could be verified: the declared one stands
        newer = await store.put_verified_income(
            uow.session,
            household_id,
            region=event.region,
            report_version=int(event.data["report_version"]),
            per_capita_fen=int(event.data["per_capita_income_fen"]),
        )
        if newer and await store.get_household(uow.session, household_id):
            await service.decide_household(uow, _context(settings, engine), household_id)

    return on_verification_completed


def subscriptions(settings: BenefitsSettings, engine: Engine) -> list[Subscription]:
    """The durable consumers the benefits service runs."""
    batches = HouseholdBatches(settings, engine)
    return [
        Subscription(
            "benefits-household",
            "REGISTRY",
            ["bangfu.registry.household.>"],
            household_handler(settings, engine, batches),
            wanted=household_events_wanted(settings),
            batch=batches.scope if settings.registry_batch_reads else None,
            read_ahead=batches.read_ahead if settings.registry_batch_reads else None,
        ),
        Subscription(
            "benefits-verification-completed",
            "VERIFICATION",
            ["bangfu.verification.verification.completed.>"],
            verification_handler(settings, engine),
        ),
    ]
