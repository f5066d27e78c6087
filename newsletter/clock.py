"""Time as an input: the one definition of "a clock" and the one function that reads the real one.

Logic never asks the system for the time. Functions that act at one instant take ``now``;
functions that run for a while (a send, a worker pass) take a :data:`Clock` and call it when
they need the time again. Only the outermost layer (the CLI, the long-running runner, a web
request) passes :func:`system_clock`; tests pass a fixed or stepping clock, so the suite gives
the same answer on any date (CI also runs the time-sensitive tests under ``faketime``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

#: Returns the current time, timezone-aware (UTC).
Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """The real time in UTC: for entry points only (CLI, runner, web request)."""
    return datetime.now(UTC)


def fixed_clock(at: datetime) -> Clock:
    """A clock that always says ``at`` (a scheduler step, a pinned test)."""
    if at.tzinfo is None:
        raise ValueError("a clock's time must be timezone-aware")
    return lambda: at
