"""Pure: weekly send rules, their occurrences in local time, and the period each one covers.

A rule is a weekday and a wall-clock time in an IANA zone ("Monday 09:00", Europe/Berlin).
Occurrences are computed on local dates and only then converted to UTC, so a send stays at
09:00 local across a daylight-saving change (07:00 UTC in summer, 08:00 UTC in winter) and a
week can't contain two or zero sends. A time that does not exist on a spring-forward day
(02:30) is taken with the offset before the change (so it happens at 03:30), and one that
exists twice on a fall-back day happens at its first occurrence: once either way.

The edition sent at occurrence T carries what was published since the previous edition's
period ended, up to its draft time (see :meth:`WeeklyRule.period`): consecutive editions tile
time with no gap and no overlap, whatever the weekday. Its period key is the ISO week of T's
local date, the unique key that makes "one edition per newsletter and week" a database
constraint.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from newsletter.errors import NewsletterError


@dataclass(frozen=True, slots=True)
class Period:
    """What one edition covers: by default the newsletter's week, Monday 00:00 to the next
    Monday 00:00 in its own time zone. The edges are computed on local dates and converted to
    UTC afterwards, so a week that contains a daylight-saving change is 167 or 169 hours long
    rather than shifted by an hour."""

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


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_RULE = re.compile(r"^\s*([A-Za-z]+)\s+(\d{1,2}):(\d{2})\s*$")
_DURATION = re.compile(r"^\s*(\d+)\s*([mhd])\s*$")
#: How far back an edition reaches for what the previous ones did not carry (skips, pauses).
MAX_CATCH_UP = timedelta(weeks=8)


class RuleError(NewsletterError, ValueError):
    """A rule, zone or duration can't be understood; the message shows the accepted form."""


@dataclass(frozen=True, slots=True)
class WeeklyRule:
    weekday: int  # 0 = Monday
    at: time
    timezone: str

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def describe(self) -> str:
        return f"{WEEKDAYS[self.weekday].capitalize()} {self.at:%H:%M} {self.timezone}"

    def on(self, day: date) -> datetime:
        """The occurrence on local date ``day`` (which must be the rule's weekday), in UTC."""
        local = datetime.combine(day, self.at, tzinfo=self.zone)
        return local.astimezone(UTC)

    def next_at_or_after(self, moment: datetime) -> datetime:
        """The first occurrence at or after the aware instant ``moment``, in UTC."""
        local_day = moment.astimezone(self.zone).date()
        day = local_day + timedelta(days=(self.weekday - local_day.weekday()) % 7)
        candidate = self.on(day)
        if candidate < moment:
            candidate = self.on(day + timedelta(days=7))
        return candidate

    def previous(self, occurrence: datetime) -> datetime:
        """The occurrence one week before ``occurrence`` (same local time, DST-safe)."""
        day = occurrence.astimezone(self.zone).date() - timedelta(days=7)
        return self.on(day)

    def key(self, occurrence: datetime) -> str:
        """The period key of the edition sent at ``occurrence``: its local ISO week."""
        year, week, _ = occurrence.astimezone(self.zone).date().isocalendar()
        return f"{year}-W{week:02d}"

    def period(
        self, occurrence: datetime, *, lead: timedelta, previous_end: datetime | None
    ) -> Period:
        """What the edition sent at ``occurrence`` carries: what was published since the
        previous edition's period ended, up to its draft time (``occurrence - lead``).

        Ending at the draft time means an editor approves exactly what goes out, and a
        comparison published after the draft goes into the next edition instead of being
        skipped (skipped weeks roll into the next edition). Without a previous edition in the
        last eight weeks (none, or a long pause), the period is the seven days before the draft
        time.
        """
        end = occurrence - lead
        start = _local_shift(end, self.zone, days=-7)
        if previous_end is not None and previous_end >= end - MAX_CATCH_UP:
            start = min(previous_end, end)
        return Period(key=self.key(occurrence), start=start, end=end, timezone=self.timezone)

    def occurrence_for(self, period_key: str) -> datetime:
        """The occurrence whose period is ``period_key`` ("2026-W49")."""
        match = re.fullmatch(r"(\d{4})-W(\d{2})", period_key)
        if not match:
            raise RuleError(f"period {period_key!r}: expected an ISO week like 2026-W49")
        try:
            day = date.fromisocalendar(int(match[1]), int(match[2]), self.weekday + 1)
        except ValueError as exc:
            raise RuleError(f"period {period_key!r}: {exc}") from None
        return self.on(day)


def _local_shift(moment: datetime, zone: ZoneInfo, *, days: int) -> datetime:
    """``moment`` moved by whole local days (same wall-clock time), in UTC."""
    local = moment.astimezone(zone)
    shifted = datetime.combine(
        local.date() + timedelta(days=days), local.timetz().replace(tzinfo=None)
    )
    return shifted.replace(tzinfo=zone).astimezone(UTC)


def parse_rule(text: str, timezone: str) -> WeeklyRule:
    """``"Monday 09:00"`` (weekday name, any case, or its first three letters; 24-hour time)."""
    match = _RULE.match(text)
    if not match:
        raise RuleError(f'{text!r}: expected a weekday and a 24-hour time, like "Monday 09:00"')
    name, hour, minute = match[1].lower(), int(match[2]), int(match[3])
    days = [i for i, d in enumerate(WEEKDAYS) if d == name or (len(name) == 3 and d[:3] == name)]
    if not days:
        raise RuleError(f"{text!r}: unknown weekday {match[1]!r}")
    if hour > 23 or minute > 59:
        raise RuleError(f"{text!r}: {hour:02d}:{minute:02d} is not a time of day")
    return WeeklyRule(days[0], time(hour, minute), check_zone(timezone))


def check_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # "Europe" is a folder: OSError
        raise RuleError(f"unknown IANA time zone {name!r} (e.g. Europe/Berlin)") from None
    return name


def parse_duration(text: str) -> timedelta:
    """``"90m"``, ``"3h"``, ``"1d"``."""
    match = _DURATION.match(text)
    if not match:
        raise RuleError(f'{text!r}: expected minutes, hours or days, like "90m", "3h" or "1d"')
    amount, unit = int(match[1]), match[2]
    minutes = amount * {"m": 1, "h": 60, "d": 1440}[unit]
    if minutes > 366 * 1440:  # far beyond any use, and timedelta overflows further on
        raise RuleError(f"{text[:40]!r}: at most a year")
    return timedelta(minutes=minutes)


def local_wave(day: date, at: time, timezone: str) -> datetime:
    """When ``at`` on local ``day`` happens in ``timezone``, floored to the whole UTC hour:
    local-time delivery sends in hourly waves (zones at :30 and :45 go with the hour)."""
    moment = datetime.combine(day, at, tzinfo=ZoneInfo(timezone)).astimezone(UTC)
    return moment.replace(minute=0, second=0, microsecond=0)
