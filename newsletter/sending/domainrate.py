"""Per-domain throttles, domain back-off and the warm-up cap: what each receiving domain and
each day may take, shared by every sender through the database.

Gmail, Yahoo and Microsoft rate-limit a sender per sending IP and domain: too much at once
earns a 421 "try again later", then the spam folder. So the gate admits, for each chunk about
to be sent:

- at most N messages per minute to one receiving domain (``NEWSLETTER_DOMAIN_LIMITS``, with
  the big providers' aliases counted together: googlemail.com is gmail.com);
- nothing to a domain that answered 421/450/451 recently: it waits 1, 2, 4 ... 30 minutes
  while the other domains go on at full speed;
- at most the warm-up plan's number of messages on each UTC day (``NEWSLETTER_WARMUP``).

A message the gate holds back is not an attempt: its delivery goes back to the queue with a
time to try again (``ledger.postpone``), and the send's normal retry loop picks it up then.
The counts live in :class:`~newsletter.storage.models.SendWindow` rows updated by compare-and-set,
one short transaction per chunk, so several workers together stay within the limits.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Row, insert, select, update
from sqlalchemy.exc import IntegrityError

from newsletter.storage.models import SendWindow, table_of

_WINDOW = table_of(SendWindow)

#: Domains the same provider judges together, counted under one name.
GROUPS: Mapping[str, str] = {
    "googlemail.com": "gmail.com",
    "hotmail.com": "outlook.com",
    "live.com": "outlook.com",
    "msn.com": "outlook.com",
    "ymail.com": "yahoo.com",
    "rocketmail.com": "yahoo.com",
    "aol.com": "yahoo.com",
}
#: Answers that mean "this domain wants us to slow down", not "this message is wrong".
BACKOFF_CODES = frozenset({421, 450, 451})
BACKOFF_BASE = 60.0
BACKOFF_MAX = 1800.0
MINUTE = 60.0

_DOMAIN = re.compile(r"(\*|[a-z0-9-]+(\.[a-z0-9-]+)+)")


def group_of(email: str) -> str:
    domain = email.rpartition("@")[2].strip().lower().rstrip(".")
    return GROUPS.get(domain, domain)


@dataclass(frozen=True, slots=True)
class DomainLimits:
    """Messages per minute by receiving domain; ``default`` for every other domain."""

    per_minute: Mapping[str, int]
    default: int | None = None

    @classmethod
    def parse(cls, spec: str) -> DomainLimits:
        """``"gmail.com=600,yahoo.com=300,*=1000"``; ValueError naming the bad entry."""
        limits: dict[str, int] = {}
        default = None
        for entry in (e.strip() for e in spec.split(",")):
            if not entry:
                continue
            domain, eq, number = entry.partition("=")
            domain = domain.strip().lower()
            if not eq or not _DOMAIN.fullmatch(domain) or not number.strip().isdigit():
                raise ValueError(
                    f"NEWSLETTER_DOMAIN_LIMITS: {entry!r} is not domain=messages-per-minute "
                    '(e.g. "gmail.com=600,*=1000")'
                )
            value = int(number)
            if value < 1:
                raise ValueError(f"NEWSLETTER_DOMAIN_LIMITS: {entry!r}: at least 1 per minute")
            if domain == "*":
                default = value
            else:
                limits[GROUPS.get(domain, domain)] = value
        return cls(limits, default)

    def limit(self, group: str) -> int | None:
        return self.per_minute.get(group, self.default)

    @property
    def empty(self) -> bool:
        return not self.per_minute and self.default is None


@dataclass(frozen=True, slots=True)
class WarmupPlan:
    """Daily caps from ``start``: ``caps[0]`` on the start day (and before it), ``caps[1]``
    the next day, ...; no cap after the last day."""

    start: date
    caps: tuple[int, ...]

    @classmethod
    def parse(cls, spec: str) -> WarmupPlan:
        """``"2026-12-01:50,100,500"``; ValueError naming what is wrong."""
        day, colon, numbers = spec.strip().partition(":")
        try:
            start = date.fromisoformat(day.strip())
        except ValueError:
            raise ValueError(
                f"NEWSLETTER_WARMUP: {day!r} is not a date (YYYY-MM-DD:50,100,...)"
            ) from None
        caps = tuple(n.strip() for n in numbers.split(",") if n.strip())
        if not colon or not caps or not all(n.isdigit() and int(n) > 0 for n in caps):
            raise ValueError(
                f"NEWSLETTER_WARMUP: after {day}: expected positive daily caps like 50,100,500"
            )
        return cls(start, tuple(int(n) for n in caps))

    def cap_on(self, day: date) -> int | None:
        index = max(0, (day - self.start).days)
        return self.caps[index] if index < len(self.caps) else None


@dataclass(frozen=True, slots=True)
class Admission:
    """Which messages of a chunk may go now (indexes) and when the others may (epoch s)."""

    allowed: list[int]
    postponed: dict[int, float]
    #: Why the first held message waits, for the operator (empty when none was held).
    reason: str = ""


class _Lost(Exception):
    """A compare-and-set lost to another sender: the transaction is rolled back."""


def _insert(conn: Connection, *, key: str, **values: float) -> bool:
    """A new window row (counts zero unless given); False if another sender created it first."""
    row = {"window_start": 0.0, "used": 0, "backoff_until": 0.0, "backoff_step": 0, **values}
    try:
        with conn.begin_nested():
            conn.execute(insert(_WINDOW).values(key=key, version=0, **row))
    except IntegrityError:
        return False
    return True


def _day_key(day: date) -> str:
    return f"day:{day.isoformat()}"


class DomainGate:
    """Admits chunks within the limits; learns from 421/451 answers. See the module doc."""

    def __init__(
        self,
        engine: Engine,
        limits: DomainLimits,
        warmup: WarmupPlan | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine, self.limits, self.warmup = engine, limits, warmup
        self._clock = clock

    @property
    def active(self) -> bool:
        return not self.limits.empty or self.warmup is not None

    def admit(self, emails: Sequence[str]) -> Admission:
        """Spend the budgets for the messages to ``emails`` that may go now."""
        while True:
            try:
                return self._try_admit(emails, self._clock())
            except _Lost:
                continue  # another sender spent in between (rolled back): read again

    def _try_admit(self, emails: Sequence[str], now: float) -> Admission:
        groups = [group_of(e) for e in emails]
        wanted = Counter(groups)
        day = datetime.fromtimestamp(now, UTC).date()
        keys = [f"d:{g}" for g in wanted]
        if self.warmup is not None:
            keys.append(_day_key(day))
        with self.engine.begin() as conn:
            rows = {r.key: r for r in conn.execute(select(_WINDOW).where(_WINDOW.c.key.in_(keys)))}
            room: dict[str, int] = {}
            wait: dict[str, tuple[float, str]] = {}
            windows: dict[str, tuple[int | None, float, int]] = {}  # group: version, start, used
            for group, count in wanted.items():
                row = rows.get(f"d:{group}")
                if row is not None and row.backoff_until > now:
                    room[group] = 0
                    wait[group] = (row.backoff_until, f"{group} asked us to slow down (421/451)")
                    continue
                limit = self.limits.limit(group)
                if limit is None:
                    room[group] = count
                    continue
                start, used = (row.window_start, row.used) if row is not None else (now, 0)
                if now - start >= MINUTE:
                    start, used = now, 0
                room[group] = max(0, min(count, limit - used))
                if room[group] < count:
                    wait[group] = (start + MINUTE, f"{group} at its limit of {limit}/min")
                windows[group] = (row.version if row else None, start, used)
            allowed, held = [], []
            taken: Counter[str] = Counter()
            for index, group in enumerate(groups):
                if taken[group] < room[group]:
                    taken[group] += 1
                    allowed.append(index)
                else:
                    held.append(index)
            postponed = {i: wait[groups[i]][0] for i in held}
            reason = wait[groups[held[0]]][1] if held else ""
            updates: list[tuple[str, int | None, float, int]] = []  # key, version, start, used
            if self.warmup is not None:
                allowed, reason = self._warm(conn, rows, day, allowed, postponed, reason, updates)
            # Only what is let through spends a domain's minute (not what the warm-up held).
            going = Counter(groups[i] for i in allowed)
            for group, (version, start, used) in windows.items():
                updates.append((f"d:{group}", version, start, used + going[group]))
            for key, version, start, used in updates:
                if not self._store(conn, key, version, start, used):
                    raise _Lost
            return Admission(allowed, postponed, reason)

    def _warm(
        self,
        conn: Connection,
        rows: Mapping[str, Row[Any]],
        day: date,
        allowed: list[int],
        postponed: dict[int, float],
        reason: str,
        updates: list[tuple[str, int | None, float, int]],
    ) -> tuple[list[int], str]:
        assert self.warmup is not None
        cap = self.warmup.cap_on(day)
        if cap is None:
            return allowed, reason
        row = rows.get(_day_key(day))
        used = int(row.used) if row is not None else 0
        room = max(0, cap - used)
        if room < len(allowed):
            tomorrow = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)
            for index in allowed[room:]:
                postponed[index] = tomorrow.timestamp()
            reason = reason or f"the warm-up plan's cap of {cap} messages on {day}"
            allowed = allowed[:room]
        version = int(row.version) if row is not None else None
        updates.append((_day_key(day), version, 0.0, used + len(allowed)))
        return allowed, reason

    @staticmethod
    def _store(conn: Connection, key: str, version: int | None, start: float, used: int) -> bool:
        """Compare-and-set one window (insert when new); False if another sender won."""
        if version is None:
            return _insert(conn, key=key, window_start=start, used=used)
        done = conn.execute(
            update(_WINDOW)
            .where(_WINDOW.c.key == key, _WINDOW.c.version == version)
            .values(window_start=start, used=used, version=version + 1)
        )
        return bool(done.rowcount == 1)

    def back_off(self, emails: Sequence[str]) -> dict[str, float]:
        """Hold the domains of ``emails`` back (they answered 421/451): 1, 2, 4 ... 30 min,
        doubling while a domain keeps answering so; returns group -> until (epoch s)."""
        now = self._clock()
        out: dict[str, float] = {}
        for group in dict.fromkeys(group_of(e) for e in emails):
            key = f"d:{group}"
            while True:
                with self.engine.begin() as conn:
                    row = conn.execute(select(_WINDOW).where(_WINDOW.c.key == key)).first()
                    if row is not None and row.backoff_until > now:
                        out[group] = row.backoff_until  # already held (another sender's 421)
                        break
                    # A domain that behaved for a while starts again from one minute.
                    recent = row is not None and now - row.backoff_until < BACKOFF_MAX
                    step = (row.backoff_step + 1) if (row is not None and recent) else 1
                    until = now + min(BACKOFF_MAX, BACKOFF_BASE * math.pow(2, step - 1))
                    if row is None:
                        fields = {"window_start": now, "backoff_until": until, "backoff_step": step}
                        if not _insert(conn, key=key, **fields):
                            continue
                    else:
                        done = conn.execute(
                            update(_WINDOW)
                            .where(_WINDOW.c.key == key, _WINDOW.c.version == row.version)
                            .values(backoff_until=until, backoff_step=step, version=row.version + 1)
                        )
                        if done.rowcount != 1:
                            continue
                    out[group] = until
                    break
        return out
