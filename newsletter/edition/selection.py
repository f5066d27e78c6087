"""Pure: which comparisons belong in a period's edition (the period is :mod:`timing`'s)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from newsletter.edition.content import ComparisonData
from newsletter.edition.timing import Period


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
