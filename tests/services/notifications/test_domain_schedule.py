"""When visits, notices and rechecks fall due; when an SMS may go: plain functions."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from services.notifications.domain import schedule
from services.notifications.domain.sending import earliest_send, in_quiet_hours
from services.notifications.domain.webhooks import (
    Filter,
    backoff_seconds,
    signature,
    verify_signature,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")


class TestVisits:
    def test_a_month_has_a_reminder_before_its_end_and_an_overdue_check_after(self) -> None:
        due = schedule.visit_schedules("2026-02", reminder_days=7, overdue_days=5)
        assert [(d.kind, d.on) for d in due] == [
            ("visit_due", date(2026, 2, 21)),
            ("visit_overdue", date(2026, 3, 5)),
        ]

    def test_a_visit_counts_for_its_month_and_a_late_one_too(self) -> None:
        assert not schedule.visited_in("2026-11", None)
        assert not schedule.visited_in("2026-11", date(2026, 10, 31))
        assert schedule.visited_in("2026-11", date(2026, 11, 1))
        assert schedule.visited_in("2026-11", date(2026, 12, 2))

    def test_periods_roll_over_the_year(self) -> None:
        assert schedule.next_period("2026-12") == "2027-01"
        assert schedule.period_of(date(2027, 1, 31)) == "2027-01"

    def test_notice_end_and_recheck_fall_on_their_days(self) -> None:
        assert schedule.notice_schedule(date(2026, 11, 7)).on == date(2026, 11, 8)
        recheck = schedule.recheck_schedule(date(2026, 11, 3), interval_days=365)
        assert (recheck.kind, recheck.on) == ("recheck_due", date(2027, 11, 3))


class TestSmsTiming:
    def test_quiet_hours_cross_midnight(self) -> None:
        late = datetime(2026, 11, 23, 23, 30, tzinfo=SHANGHAI)
        noon = datetime(2026, 11, 23, 12, 0, tzinfo=SHANGHAI)
        assert in_quiet_hours(late, start=22, end=8, zone=SHANGHAI)
        assert not in_quiet_hours(noon, start=22, end=8, zone=SHANGHAI)

    def test_a_message_in_quiet_hours_waits_for_the_morning(self) -> None:
        late = datetime(2026, 11, 23, 15, 30, tzinfo=UTC)  # 23:30 in Shanghai
        send = earliest_send(
            late, recent_sends=[], per_day=3, quiet_start=22, quiet_end=8, zone=SHANGHAI
        )
        assert send == datetime(2026, 11, 24, 8, 0, tzinfo=SHANGHAI)

    def test_over_the_daily_limit_waits_until_the_oldest_send_is_a_day_old(self) -> None:
        now = datetime(2026, 11, 23, 4, 0, tzinfo=UTC)  # noon in Shanghai
        recent = [now - timedelta(hours=h) for h in (1, 2, 3)]
        send = earliest_send(
            now, recent_sends=recent, per_day=3, quiet_start=22, quiet_end=8, zone=SHANGHAI
        )
        assert send == recent[-1] + timedelta(days=1)
        under = earliest_send(
            now, recent_sends=recent[:2], per_day=3, quiet_start=22, quiet_end=8, zone=SHANGHAI
        )
        assert under == now


class TestWebhookRules:
    def test_a_signature_verifies_only_with_its_secret_body_and_a_fresh_timestamp(self) -> None:
        header = signature("s3cret", timestamp=1_700_000_000, body=b'{"a":1}')
        assert header.startswith("v1=")
        check = {"timestamp": 1_700_000_000, "header": header}
        assert verify_signature("s3cret", body=b'{"a":1}', now=1_700_000_010, **check)
        assert not verify_signature("other", body=b'{"a":1}', now=1_700_000_010, **check)
        assert not verify_signature("s3cret", body=b'{"a":2}', now=1_700_000_010, **check)
        assert not verify_signature("s3cret", body=b'{"a":1}', now=1_700_001_000, **check)

    def test_backoff_doubles_with_jitter_up_to_the_cap(self) -> None:
        import random

        rng = random.Random(7)
        waits = [backoff_seconds(n, base=1, cap=30, rng=rng) for n in range(1, 8)]
        ceilings = [1, 2, 4, 8, 16, 30, 30]
        assert all(c / 2 <= w <= c for w, c in zip(waits, ceilings, strict=True))

    def test_a_filter_matches_type_patterns_and_region_prefixes(self) -> None:
        wanted = Filter(("cn.bangfu.registry.household.*",), ("4113",))
        assert wanted.wants(event_type="cn.bangfu.registry.household.enrolled.v1", region="411302")
        assert not wanted.wants(event_type="cn.bangfu.registry.household.x.v1", region="410102")
        assert not wanted.wants(event_type="cn.bangfu.benefits.exit.eligible.v1", region="411302")
        assert Filter(("*",), ("11",)).wants(event_type="anything", region="110101")

    def test_a_filter_without_regions_wants_nothing(self) -> None:
        assert not Filter(("*",), ()).wants(event_type="anything", region="110101")
