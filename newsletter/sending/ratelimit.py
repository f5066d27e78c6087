"""A token-bucket rate limit: messages per second and an optional quota per hour.

Email APIs and SMTP relays impose both (e.g. 14/s and 50,000/day on a new SES account), so a
send must respect both. This limiter counts in one process; sends use
:class:`~newsletter.sending.sharedrate.SharedRateLimiter`, which keeps the same bucket in the
database so every worker of an edition shares it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class RateSpec:
    per_second: float | None = None
    per_hour: int | None = None

    @classmethod
    def parse(cls, text: str) -> RateSpec:
        """``""`` (unlimited), ``"100/s"``, ``"50000/h"`` or ``"100/s,50000/h"``."""
        per_second: float | None = None
        per_hour: int | None = None
        for part in (p.strip() for p in text.split(",") if p.strip()):
            amount, _, unit = part.partition("/")
            try:
                value = float(amount)
            except ValueError:
                raise ValueError(
                    f"rate {part!r}: expected a number like 100/s or 50000/h"
                ) from None
            if value <= 0:
                raise ValueError(f"rate {part!r}: must be positive")
            if unit == "s":
                per_second = value
            elif unit == "h":
                per_hour = int(value)
            else:
                raise ValueError(f"rate {part!r}: unit must be /s or /h")
        return cls(per_second, per_hour)

    @property
    def unlimited(self) -> bool:
        return self.per_second is None and self.per_hour is None

    def chunk_size(self, batch: int) -> int:
        """How many messages to hand to the backend at once under this limit: at most one
        second's worth, so a chunk never waits longer than a second for its tokens."""
        if self.per_second is None:
            return batch
        return max(1, min(batch, int(self.per_second)))


class Limiter(Protocol):
    """What a send needs from a rate limit (in-process or shared through the database)."""

    def chunk_size(self, batch: int) -> int: ...

    def acquire(self, n: int) -> None: ...


class RateLimiter:
    """Blocks in :meth:`acquire` until sending ``n`` more messages keeps within both limits."""

    def __init__(
        self,
        spec: RateSpec,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.spec = spec
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        now = clock()
        rate = spec.per_second
        self._capacity = max(1.0, rate) if rate else 0.0  # a burst of at most one second
        self._tokens = self._capacity
        self._refilled = now
        self._hour_start, self._hour_used = now, 0

    def chunk_size(self, batch: int) -> int:
        return self.spec.chunk_size(batch)

    def acquire(self, n: int) -> None:
        if self.spec.unlimited:
            return
        with self._lock:
            while True:
                now = self._clock()
                wait = self._hour_wait(now, n)
                if self.spec.per_second is not None:
                    rate = self.spec.per_second
                    self._tokens = min(self._capacity, self._tokens + (now - self._refilled) * rate)
                    self._refilled = now
                    if self._tokens < n:
                        wait = max(wait, (n - self._tokens) / rate)
                if wait <= 0:
                    if self.spec.per_second is not None:
                        self._tokens -= n
                    self._hour_used += n
                    return
                self._sleep(wait)

    def _hour_wait(self, now: float, n: int) -> float:
        if self.spec.per_hour is None:
            return 0.0
        if now - self._hour_start >= 3600:
            self._hour_start, self._hour_used = now, 0
        if self._hour_used + n <= self.spec.per_hour:
            return 0.0
        return self._hour_start + 3600 - now
