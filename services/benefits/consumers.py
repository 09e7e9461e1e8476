"""The benefits service's event handlers: registry households and verification reports."""

from __future__ import annotations

from datetime import date

import structlog

from services.benefits import service, store
from services.benefits.service import Engine
from services.benefits.settings import BenefitsSettings
from shared.auth import Principal
from shared.db import UnitOfWork
from shared.events.consumer import Handler, Subscription
from shared.events.envelope import CloudEvent
from shared.regions import FILING_PROVINCES

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


def household_handler(settings: BenefitsSettings, engine: Engine) -> Handler:
    async def on_household(event: CloudEvent, uow: UnitOfWork) -> None:
        """household.*: a month's income re-evaluates 脱困; a change re-decides the card."""
        name = event.type.split(".")[-2]
        household_id = str(event.data["household_id"])
        ctx = _context(settings, engine)
        if name == "income_recorded":
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
        elif name in REFETCH and settings.follow_registry:
            household = await service.fetch_household(settings, household_id, on=ctx.today)
            if household is None:
                log.info("benefits.household_gone", household_id=household_id)
                return
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
    return [
        Subscription(
            "benefits-household",
            "REGISTRY",
            ["bangfu.registry.household.>"],
            household_handler(settings, engine),
        ),
        Subscription(
            "benefits-verification-completed",
            "VERIFICATION",
            ["bangfu.verification.verification.completed.>"],
            verification_handler(settings, engine),
        ),
    ]
