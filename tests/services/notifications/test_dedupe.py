"""One message per recipient, channel and cause, however often the cause comes round."""

from __future__ import annotations

from datetime import UTC, datetime

from services.notifications import service, store
from services.notifications.domain.rules import Occurrence, intents
from shared.db import Database
from tests.services.notifications.samples import SAMPLES


async def test_the_same_cause_twice_sends_each_recipient_one_message(
    db: Database,
    engine: service.Engine,
) -> None:
    occurrence = Occurrence(
        "benefits.exit.eligible",
        "event-1",
        "hh-1",
        "411302",
        SAMPLES["benefits.exit.eligible"],
        "2026-11-23",
    )
    found = intents(engine.book, occurrence)
    now = datetime.now(UTC)
    async with db.unit_of_work() as uow:
        first = await service.send(uow, engine, found, now=now)
        await uow.commit()
    async with db.unit_of_work() as uow:
        again = await service.send(uow, engine, found, now=now)
        await uow.commit()
        stored = await store.find_messages(uow.session, regions=["41"], cause="event-1")
    assert len(first) == 2 and again == []
    assert sorted(m["channel"] for m in stored) == ["email", "inbox"]
