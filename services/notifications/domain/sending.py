"""When an SMS may go out: never in quiet hours, never more than N a day to one number."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo


def in_quiet_hours(moment: datetime, *, start: int, end: int, zone: ZoneInfo) -> bool:
    """Quiet hours run from `start` to `end` o'clock local time, across midnight if start > end."""
    hour = moment.astimezone(zone).hour
    if start == end:
        return False
    if start < end:
        return start <= hour < end
    return hour >= start or hour < end


def after_quiet_hours(moment: datetime, *, start: int, end: int, zone: ZoneInfo) -> datetime:
    """The moment itself, or the end of the quiet hours it falls in."""
    if not in_quiet_hours(moment, start=start, end=end, zone=zone):
        return moment
    local = moment.astimezone(zone)
    wake = datetime.combine(local.date(), time(end), tzinfo=zone)
    if wake <= local:
        wake += timedelta(days=1)
    return wake.astimezone(moment.tzinfo)


def earliest_send(
    now: datetime,
    *,
    recent_sends: Sequence[datetime],
    per_day: int,
    quiet_start: int,
    quiet_end: int,
    zone: ZoneInfo,
) -> datetime:
    """The first moment an SMS may go to a recipient who was sent `recent_sends` already.

    At most `per_day` in any 24 hours: a message over the limit waits until the oldest of the
    last `per_day` sends is 24 hours old; then it also waits out the quiet hours.
    """
    moment = now
    window = sorted(s for s in recent_sends if s > now - timedelta(days=1))
    if per_day > 0 and len(window) >= per_day:
        moment = max(moment, window[-per_day] + timedelta(days=1))
    return after_quiet_hours(moment, start=quiet_start, end=quiet_end, zone=zone)
