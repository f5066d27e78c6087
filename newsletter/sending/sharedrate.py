"""The rate limit of one edition's send, shared by every sender through the database.

:class:`~newsletter.sending.ratelimit.RateLimiter` counts in one process; with several worker
processes (on several machines) each would spend the whole allowance. This one keeps the
token bucket and the hour's count in the edition's :class:`~newsletter.storage.models.RateBucket`
row and spends tokens with a compare-and-set on its version, so however many senders share an
edition, together they stay within ``100/s`` and ``50000/h``. One short transaction per chunk
of messages (50), on its own connection; clocks are epoch seconds, so machines need NTP.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from newsletter.sending.ratelimit import RateSpec
from newsletter.storage.models import RateBucket, table_of

_BUCKET = table_of(RateBucket)


class SharedRateLimiter:
    """Same contract as :class:`~newsletter.sending.ratelimit.RateLimiter`: :meth:`acquire` blocks
    until sending ``n`` more messages keeps the whole edition within both limits."""

    def __init__(
        self,
        engine: Engine,
        edition_id: int,
        spec: RateSpec,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.engine, self.edition_id, self.spec = engine, edition_id, spec
        self._clock, self._sleep = clock, sleep
        rate = spec.per_second
        self._capacity = max(1.0, rate) if rate else 0.0  # a burst of at most one second

    def chunk_size(self, batch: int) -> int:
        return self.spec.chunk_size(batch)

    def acquire(self, n: int) -> None:
        if self.spec.unlimited:
            return
        while True:
            wait = self._try(n)
            if wait <= 0:
                return
            self._sleep(wait)

    def _try(self, n: int) -> float:
        """Spend ``n`` tokens if the bucket has them (0.0), else how long to wait first. A
        lost compare-and-set (another sender spent in between) retries at once."""
        while True:
            with self.engine.begin() as conn:
                row = conn.execute(
                    select(_BUCKET).where(_BUCKET.c.edition_id == self.edition_id)
                ).first()
                now = self._clock()
                if row is None:
                    try:
                        with conn.begin_nested():
                            conn.execute(
                                insert(_BUCKET).values(
                                    edition_id=self.edition_id,
                                    tokens=self._capacity,
                                    refilled_at=now,
                                    hour_start=now,
                                    hour_used=0,
                                    version=0,
                                )
                            )
                    except IntegrityError:
                        pass  # another sender created it first
                    continue
                tokens, hour_start, hour_used = row.tokens, row.hour_start, row.hour_used
                wait = 0.0
                rate = self.spec.per_second
                if rate is not None:
                    tokens = min(self._capacity, tokens + max(0.0, now - row.refilled_at) * rate)
                    if tokens < n:
                        wait = (n - tokens) / rate
                if self.spec.per_hour is not None:
                    if now - hour_start >= 3600:
                        hour_start, hour_used = now, 0
                    if hour_used + n > self.spec.per_hour:
                        wait = max(wait, hour_start + 3600 - now)
                if wait > 0:
                    return wait
                done = conn.execute(
                    update(_BUCKET)
                    .where(
                        _BUCKET.c.edition_id == self.edition_id,
                        _BUCKET.c.version == row.version,
                    )
                    .values(
                        tokens=tokens - n if rate is not None else tokens,
                        refilled_at=now,
                        hour_start=hour_start,
                        hour_used=hour_used + n,
                        version=row.version + 1,
                    )
                )
                if done.rowcount == 1:
                    return 0.0
