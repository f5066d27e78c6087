"""Pure: which period an instant falls in, and which comparisons belong in that period's edition.

A period is the newsletter's week, Monday 00:00 to the next Monday 00:00 in its own time zone.
The edges are computed on local dates and converted to UTC afterwards, so a week that contains a
daylight-saving change is 167 or 169 hours long rather than shifted by an hour.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from newsletter.content import ComparisonData


@dataclass(frozen=True, slots=True)
class Period:
    key: str  # ISO week of the local Monday, e.g. "2026-W48"
    start: datetime  # aware, UTC, inclusive
    end: datetime  # aware, UTC, exclusive
    timezone: str

    def describe(self) -> str:
        zone = ZoneInfo(self.timezone)
        start = self.start.astimezone(zone)
        last_day = (self.end.astimezone(zone) - timedelta(days=1)).date()
        return f"{self.key}: {start:%a %d %b %Y} to {last_day:%a %d %b %Y} ({self.timezone})"


def week_containing(at: datetime, timezone: str) -> Period:
    """The local week (Monday-based) that contains the aware instant ``at``."""
    if at.tzinfo is None:
        raise ValueError("`at` must be timezone-aware")
    zone = ZoneInfo(timezone)
    local_day = at.astimezone(zone).date()
    monday = local_day - timedelta(days=local_day.weekday())
    start = datetime.combine(monday, time(0), tzinfo=zone)
    end = datetime.combine(monday + timedelta(days=7), time(0), tzinfo=zone)
    year, week, _ = monday.isocalendar()
    return Period(
        key=f"{year}-W{week:02d}",
        start=start.astimezone(UTC),
        end=end.astimezone(UTC),
        timezone=timezone,
    )


@dataclass(frozen=True, slots=True)
class Selection:
    items: tuple[ComparisonData, ...]
    more_count: int  # comparisons left out by the cap
    more: tuple[ComparisonData, ...] = ()  # those comparisons, named in the email

    @property
    def empty(self) -> bool:
        return not self.items


def select_comparisons(
    candidates: Iterable[ComparisonData],
    *,
    period: Period,
    already_sent: set[int],
    cap: int,
) -> Selection:
    """Comparisons published in ``period`` that no earlier sent edition carried.

    Newest first (ties broken by slug so the order is stable), at most ``cap``; the rest are
    counted in ``more_count`` and kept in ``more``, named in the email's "Also this week".
    """
    if cap < 1:
        raise ValueError("cap must be at least 1")
    fresh: Sequence[ComparisonData] = sorted(
        (
            c
            for c in candidates
            if period.start <= c.published_at < period.end and c.id not in already_sent
        ),
        key=lambda c: (c.published_at, c.slug),
        reverse=True,
    )
    return Selection(
        items=tuple(fresh[:cap]), more_count=max(0, len(fresh) - cap), more=tuple(fresh[cap:])
    )
