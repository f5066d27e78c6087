"""A send's progress as it happens, message by message, for people watching it.

Dispatch counts every answer the moment the backend gives it (every sender thread of a
``--concurrency`` send into the same counter), so a send limited to 2 messages a second moves
twice a second instead of once per 500-message batch. The CLI draws it: a bar with rate and
time left on a terminal, and a plain log line every few seconds otherwise (cron, systemd),
where nothing used to print until the end.

The rate is measured over a sliding window of recent answers, not since the start, so a send
that waited on a retry or a rate limit shows what it does now, and the time left follows it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

#: Seconds of recent answers the rate is measured over.
RATE_WINDOW = 20.0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The counts at one moment; ``rate`` in messages a second over the recent window."""

    done: int
    total: int | None
    problems: int
    rate: float
    elapsed: float

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate; None when unknown (no total, no rate yet)."""
        if self.total is None or self.rate <= 0:
            return None
        return max(self.total - self.done, 0) / self.rate


class SendProgress:
    """Thread-safe counters of one send: answered, problems (failed, deferred, unknown)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self._total: int | None = None
        self._done = 0
        self._problems = 0
        self._recent: deque[tuple[float, int]] = deque()

    def start(self, total: int) -> None:
        """The number of deliveries this send has before it (open ones, retries included)."""
        with self._lock:
            self._total = total
            self._started = self._clock()

    def add(self, count: int = 1, *, problem: bool = False) -> None:
        """``count`` deliveries answered (sent, or a problem), or skipped (unsubscribed)."""
        now = self._clock()
        with self._lock:
            self._done += count
            if problem:
                self._problems += count
            self._recent.append((now, count))
            while self._recent and self._recent[0][0] < now - RATE_WINDOW:
                self._recent.popleft()

    def snapshot(self) -> Snapshot:
        now = self._clock()
        with self._lock:
            while self._recent and self._recent[0][0] < now - RATE_WINDOW:
                self._recent.popleft()
            recent = sum(n for _, n in self._recent)
            span = min(RATE_WINDOW, max(now - self._started, 1.0))  # no spike in the first second
            elapsed = now - self._started
            return Snapshot(self._done, self._total, self._problems, recent / span, elapsed)


def duration(seconds: float | None) -> str:
    """``42s``, ``3m05s``, ``2h10m``; ``?`` when unknown."""
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def progress_line(edition_id: int, snap: Snapshot) -> str:
    """One log line: ``edition 7: 1,200/10,000 (12%), 40.1 msg/s, 3m40s left, 3 failed``."""
    if snap.total:
        share = f" ({100 * snap.done / snap.total:.0f}%)"
        count = f"{snap.done:,}/{snap.total:,}{share}"
    else:
        count = f"{snap.done:,}"
    return (
        f"edition {edition_id}: {count}, {snap.rate:.1f} msg/s, {duration(snap.eta)} left, "
        f"{snap.problems} not sent (failed, deferred or unknown)"
    )


@contextmanager
def lines_every(
    edition_id: int, progress: SendProgress, *, every: float, say: Callable[[str], None]
) -> Iterator[None]:
    """While the block runs, ``say`` a :func:`progress_line` every ``every`` seconds (from a
    thread that only reads ``progress``): a send under cron or systemd shows it is alive."""
    stop = threading.Event()

    def report() -> None:
        while not stop.wait(every):
            say(progress_line(edition_id, progress.snapshot()))

    reporter = threading.Thread(target=report, name="progress", daemon=True)
    reporter.start()
    try:
        yield
    finally:
        stop.set()
        reporter.join()
