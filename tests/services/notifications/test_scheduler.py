"""The durable scheduler: monthly visits, catch-up after downtime, a restart, two replicas,
a schedule whose firing fails."""

from __future__ import annotations

import asyncio
import json
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats
import yaml
from sqlalchemy import func, select

from services.notifications import follow_up, service, store
from services.notifications.app import create_app
from services.notifications.scheduler import Scheduler
from services.notifications.settings import NotificationsSettings
from shared.db import Database
from shared.events.envelope import new_event
from shared.events.outbox import backlog
from tests.conftest import running
from tests.services.notifications.conftest import eventually


def utc(day: str, hour: int = 12) -> datetime:
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)


async def happen(
    db: Database, engine: service.Engine, name: str, household_id: str, **data: Any
) -> None:
    """A registry event reaching the notifications consumer."""
    event = new_event(
        service="registry",
        aggregate="household",
        name=name,
        subject=household_id,
        region="411302",
        sequence=1,
        data={"household_id": household_id, **data},
    )
    async with db.unit_of_work() as uow:
        await follow_up.on_event(uow, engine, event)
        await uow.commit()


async def enrol(db: Database, engine: service.Engine, household_id: str, *, helper: str) -> None:
    await happen(db, engine, "enrolled", household_id, enrolled_on="2026-11-03", category="dibao")
    await happen(
        db,
        engine,
        "helper_assigned",
        household_id,
        helper_id=helper,
        helper_name_masked="李*",
        unit="社区",
    )


async def run_until_idle(scheduler: Scheduler, *, now: datetime) -> int:
    fired = 0
    while count := await scheduler.run_once(now=now):
        fired += count
    return fired


async def messages(db: Database, template: str) -> list[dict[str, Any]]:
    async with db.unit_of_work() as uow:
        rows = await uow.session.execute(
            select(store.message)
            .where(store.message.c.template == template)
            .order_by(store.message.c.cause)
        )
        return [dict(r) for r in rows.mappings()]


class TestMonthlyVisits:
    async def test_an_unvisited_household_reminds_the_helper_then_tells_the_county_office(
        self, db: Database, engine: service.Engine
    ) -> None:
        await enrol(db, engine, "hh-1", helper="H001")
        scheduler = Scheduler(db, engine, name="a")
        assert await run_until_idle(scheduler, now=utc("2026-11-22")) == 0
        await run_until_idle(scheduler, now=utc("2026-11-23"))
        [reminder] = await messages(db, "visit_due")
        assert reminder["recipient_key"] == "helper:H001"
        assert reminder["cause"] == "visit_due:hh-1:2026-11"
        await run_until_idle(scheduler, now=utc("2026-12-05"))
        overdue = await messages(db, "visit_overdue")
        assert {m["recipient_key"] for m in overdue} == {"county_office:411302"}
        assert {m["channel"] for m in overdue} == {"inbox", "email"}

    async def test_a_visit_in_the_month_silences_both(
        self, db: Database, engine: service.Engine
    ) -> None:
        await enrol(db, engine, "hh-2", helper="H002")
        await happen(
            db,
            engine,
            "visit_recorded",
            "hh-2",
            visit_id="v1",
            visited_on="2026-11-10",
            helper_id="H002",
            follow_up_needed=False,
        )
        await run_until_idle(Scheduler(db, engine), now=utc("2026-12-06"))
        assert await messages(db, "visit_due") == []
        assert await messages(db, "visit_overdue") == []
        async with db.unit_of_work() as uow:
            fired = await store.schedules_of(uow.session, "hh-2")
        outcomes = {(r["kind"], r["period"]): r["outcome"] for r in fired}
        assert outcomes[("visit_due", "2026-11")] == "skipped"
        assert outcomes[("visit_overdue", "2026-11")] == "skipped"
        assert outcomes[("visit_due", "2026-12")] is None  # next month's, not yet due

    async def test_after_downtime_every_missed_month_fires_once(
        self, db: Database, engine: service.Engine
    ) -> None:
        await enrol(db, engine, "hh-3", helper="H003")
        await run_until_idle(Scheduler(db, engine), now=utc("2027-03-01"))
        reminders = await messages(db, "visit_due")
        assert [m["cause"].rsplit(":", 1)[1] for m in reminders] == [
            "2026-11",
            "2026-12",
            "2027-01",
            "2027-02",
        ]
        overdue = await messages(db, "visit_overdue")
        assert sorted({m["cause"].rsplit(":", 1)[1] for m in overdue}) == [
            "2026-11",
            "2026-12",
            "2027-01",
        ]

    async def test_an_exited_household_is_no_longer_followed(
        self, db: Database, engine: service.Engine
    ) -> None:
        await enrol(db, engine, "hh-4", helper="H004")
        await happen(
            db, engine, "exited", "hh-4", kind="tuokun", reason="收入稳定", exited_on="2026-11-15"
        )
        await run_until_idle(Scheduler(db, engine), now=utc("2027-01-01"))
        assert await messages(db, "visit_due") == []
        async with db.unit_of_work() as uow:
            rows = await store.schedules_of(uow.session, "hh-4")
        assert {r["outcome"] for r in rows} == {"cancelled"}

    async def test_a_household_that_exits_and_comes_back_is_followed_again(
        self, db: Database, engine: service.Engine
    ) -> None:
        await enrol(db, engine, "hh-6", helper="H006")
        await happen(
            db, engine, "exited", "hh-6", kind="tuikun", reason="迁出", exited_on="2026-11-10"
        )
        await enrol(db, engine, "hh-6", helper="H006")  # enrolled again, the same month
        await run_until_idle(Scheduler(db, engine), now=utc("2026-12-24"))
        reminders = [m["cause"] for m in await messages(db, "visit_due")]
        assert reminders == ["visit_due:hh-6:2026-11", "visit_due:hh-6:2026-12"]

    async def test_notice_end_and_recheck_tell_the_county_office(
        self, db: Database, engine: service.Engine
    ) -> None:
        await happen(
            db,
            engine,
            "noticed",
            "hh-5",
            notice_starts_on="2026-11-01",
            notice_ends_on="2026-11-07",
        )
        await enrol(db, engine, "hh-5", helper="H005")
        await run_until_idle(Scheduler(db, engine), now=utc("2027-11-03", hour=2))
        assert [m["cause"] for m in await messages(db, "notice_ended")] == [
            "notice_ended:hh-5:2026-11-07"
        ] * 2
        rechecks = await messages(db, "recheck_due")
        assert {m["cause"] for m in rechecks} == {"recheck_due:hh-5:2027-11-03"}


class TestDurability:
    async def test_schedules_survive_a_restart_and_fire_once(
        self, settings: NotificationsSettings, engine: service.Engine
    ) -> None:
        url, schema = settings.database
        first = Database(url, schema=schema)
        await enrol(first, engine, "hh-r", helper="H1")
        await run_until_idle(Scheduler(first, engine), now=utc("2026-11-23"))
        await first.dispose()  # the process stops
        second = Database(url, schema=schema)
        again = Scheduler(second, engine)
        assert await run_until_idle(again, now=utc("2026-11-23")) == 0
        await run_until_idle(again, now=utc("2026-12-24"))
        causes = [m["cause"] for m in await messages(second, "visit_due")]
        await second.dispose()
        assert causes == ["visit_due:hh-r:2026-11", "visit_due:hh-r:2026-12"]

    async def test_two_replicas_fire_every_schedule_exactly_once(
        self, settings: NotificationsSettings, engine: service.Engine, db: Database
    ) -> None:
        households = [f"hh-{i:03d}" for i in range(60)]
        for household in households:
            await enrol(db, engine, household, helper=f"H{household}")
        small = service.Engine(
            settings=settings.model_copy(update={"scheduler_batch_size": 10}),
            book=engine.book,
            templates=engine.templates,
        )
        url, schema = settings.database
        replicas = [Database(url, schema=schema) for _ in range(2)]
        try:
            schedulers = [Scheduler(r, small, name=f"replica-{i}") for i, r in enumerate(replicas)]
            now = utc("2026-11-24")
            await asyncio.gather(*(run_until_idle(s, now=now) for s in schedulers))
        finally:
            for replica in replicas:
                await replica.dispose()
        async with db.unit_of_work() as uow:
            fired = (
                await uow.session.execute(
                    select(store.schedule.c.fired_by, func.count())
                    .where(
                        store.schedule.c.kind == "visit_due", store.schedule.c.period == "2026-11"
                    )
                    .group_by(store.schedule.c.fired_by)
                )
            ).all()
        by_replica = dict(fired)  # type: ignore[arg-type]
        assert sum(by_replica.values()) == len(households)
        assert set(by_replica) <= {"replica-0", "replica-1"}
        reminders = await messages(db, "visit_due")
        assert sorted(m["recipient_key"] for m in reminders) == sorted(
            f"helper:H{h}" for h in households
        )
        if os.environ.get("BANGFU_TEST_DATABASE_URL"):
            # SKIP LOCKED lets both work at once; SQLite's single writer may let one do it all.
            assert set(by_replica) == {"replica-0", "replica-1"}


def rules_with_a_missing_template(tmp_path: Path) -> Path:
    """The shipped rules, with the notice's end also emailed through a template never deployed:
    its inbox message is written (and announced) before the email fails to render."""
    raw = yaml.safe_load(service.RULES_FILE.read_text(encoding="utf-8"))
    raw["events"]["schedule.notice_ended"] = [
        {"template": "notice_ended", "to": "county_office", "channels": ["inbox"]},
        {"template": "notice_closed", "to": "county_office", "channels": ["email"]},
    ]
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


class TestAFiringThatFails:
    async def test_it_fails_alone_after_bounded_attempts_and_the_other_fires_once(
        self, settings: NotificationsSettings, nats_url: str, tmp_path: Path
    ) -> None:
        faulty = settings.model_copy(
            update={
                "rules_file": rules_with_a_missing_template(tmp_path),
                "workers": False,  # this test drives the scheduler; the app relays its events
                "scheduler_max_attempts": 5,
                "scheduler_backoff_base_seconds": 60,
                "scheduler_backoff_cap_seconds": 180,
            }
        )
        engine = service.Engine.from_settings(faulty)
        app = create_app(faulty)
        nc = await nats.connect(nats_url)
        seen: list[dict[str, Any]] = []

        async def collect(message: Any) -> None:
            seen.append(json.loads(message.data)["data"])

        await nc.subscribe("bangfu.notifications.>", cb=collect)
        async with running(app):
            db: Database = app.state.runtime.db
            await happen(
                db,
                engine,
                "noticed",
                "hh-bad",
                notice_starts_on="2026-11-01",
                notice_ends_on="2026-11-07",
            )
            await enrol(db, engine, "hh-good", helper="H001")
            scheduler = Scheduler(db, engine, name="a")
            start = utc("2026-11-23")
            claimed = [
                await scheduler.run_once(now=start + timedelta(minutes=minute))
                for minute in range(15)
            ]
            good = "visit_due:hh-good:2026-11"
            await eventually(lambda: any(e.get("cause") == good for e in seen))

            async def relayed() -> bool:
                async with db.unit_of_work() as uow:
                    return (await backlog(uow.session)).count == 0

            await eventually(relayed)
            await nc.flush()
            reminders = await messages(db, "visit_due")
            notices = await messages(db, "notice_ended")
            async with db.unit_of_work() as uow:
                [bad] = [
                    r
                    for r in await store.schedules_of(uow.session, "hh-bad")
                    if r["kind"] == "notice_ended"
                ]
        await nc.close()
        # Both at first; then the failing one alone, 1, 2, 3 and 3 minutes later (the cap).
        assert [(m, n) for m, n in enumerate(claimed) if n] == [
            (0, 2),
            (1, 1),
            (3, 1),
            (6, 1),
            (9, 1),
        ]
        assert [m["cause"] for m in reminders] == [good]
        assert notices == []  # its inbox message went with its failed attempts
        assert (bad["outcome"], bad["attempts"], bad["fired_by"]) == ("failed", 5, "a")
        assert "notice_closed.email.j2" in bad["reason"]
        causes = [e.get("cause") for e in seen]
        assert causes.count(good) == 1
        assert not [c for c in causes if c and c.startswith("notice_ended:")]

    async def test_the_services_scheduler_ends_it_failed_and_counts_it_in_the_metrics(
        self, settings: NotificationsSettings, tmp_path: Path
    ) -> None:
        faulty = settings.model_copy(
            update={
                "rules_file": rules_with_a_missing_template(tmp_path),
                "worker_poll_seconds": 0.05,
                "scheduler_max_attempts": 3,
                "scheduler_backoff_base_seconds": 0.05,
                "scheduler_backoff_cap_seconds": 0.1,
            }
        )
        engine = service.Engine.from_settings(faulty)
        app = create_app(faulty)
        async with running(app) as client:
            db: Database = app.state.runtime.db
            await happen(
                db,
                engine,
                "noticed",
                "hh-bad",
                notice_starts_on="2026-11-01",
                notice_ends_on="2026-11-07",  # long past: due at once
            )

            async def failed() -> bool:
                async with db.unit_of_work() as uow:
                    rows = await store.schedules_of(uow.session, "hh-bad")
                return [(r["outcome"], r["attempts"]) for r in rows] == [("failed", 3)]

            await eventually(failed)
            metrics = (await client.get("/metrics")).text
        failures = {
            (kind, outcome): float(count)
            for kind, outcome, count in re.findall(
                r"^bangfu_notification_schedule_failures_total"
                r'\{kind="(\w+)",outcome="(\w+)"\} (\S+)$',
                metrics,
                re.MULTILINE,
            )
        }
        assert failures[("notice_ended", "retrying")] == 2
        assert failures[("notice_ended", "failed")] == 1
        assert failures[("visit_due", "failed")] == 0  # each kind's series is there from the start
