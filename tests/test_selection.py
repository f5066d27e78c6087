"""Selection: week edges in a non-UTC zone (with DST), already-sent exclusion, cap, empty week."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import Session

from newsletter import publish
from newsletter.config import Settings
from newsletter.edition.content import ComparisonData
from newsletter.edition.selection import select_comparisons
from newsletter.edition.timing import week_containing
from newsletter.storage import store
from newsletter.storage.models import EditionStatus

NY = ZoneInfo("America/New_York")


def test_week_edges_are_local_midnights_in_a_non_utc_zone() -> None:
    # Sunday 23:59 local in New York is still the week of Monday 16 Nov.
    sunday_late = datetime(2026, 11, 22, 23, 59, tzinfo=NY)
    period = week_containing(sunday_late, "America/New_York")
    assert period.key == "2026-W47"
    assert period.start == datetime(2026, 11, 16, 0, 0, tzinfo=NY).astimezone(UTC)
    assert period.start == datetime(2026, 11, 16, 5, 0, tzinfo=UTC)
    # The same instant is already Monday in UTC, hence the next week there.
    assert week_containing(sunday_late, "UTC").key == "2026-W48"
    monday = week_containing(datetime(2026, 11, 23, 0, 0, tzinfo=NY), "America/New_York")
    assert monday.key == "2026-W48" and monday.start == period.end


def test_week_across_dst_change_is_not_shifted() -> None:
    # US DST ended on Sunday 1 Nov 2026: that week is 169 hours long, edges still at midnight.
    period = week_containing(datetime(2026, 10, 28, 12, tzinfo=UTC), "America/New_York")
    assert period.end - period.start == timedelta(hours=169)
    assert period.start.astimezone(NY).hour == 0 and period.end.astimezone(NY).hour == 0


def test_naive_instant_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        week_containing(datetime(2026, 11, 23), "UTC")


def _at(make: Callable[..., ComparisonData], slug: str, when: datetime, id_: int) -> ComparisonData:
    return make(slug, published_at=when.isoformat()).model_copy(update={"id": id_})


def test_window_edges_inclusive_start_exclusive_end(
    make_comparison: Callable[..., ComparisonData],
) -> None:
    period = week_containing(datetime(2026, 11, 25, tzinfo=NY), "America/New_York")
    start_local = period.start.astimezone(NY)
    candidates = [
        _at(make_comparison, "at-start", start_local, 1),
        _at(make_comparison, "just-before", start_local - timedelta(seconds=1), 2),
        _at(make_comparison, "at-end", period.end.astimezone(NY), 3),
        _at(make_comparison, "just-before-end", period.end - timedelta(seconds=1), 4),
    ]
    chosen = select_comparisons(candidates, period=period, already_sent=set(), cap=8)
    assert [c.slug for c in chosen.items] == ["just-before-end", "at-start"]


def test_newest_first_cap_and_more_count(make_comparison: Callable[..., ComparisonData]) -> None:
    period = week_containing(datetime(2026, 11, 25, tzinfo=UTC), "UTC")
    items = [
        _at(make_comparison, f"c-{i}", period.start + timedelta(hours=i), i) for i in range(1, 12)
    ]
    chosen = select_comparisons(items, period=period, already_sent={11}, cap=8)
    assert [c.slug for c in chosen.items] == [f"c-{i}" for i in range(10, 2, -1)]
    assert chosen.more_count == 2


def test_empty_week(make_comparison: Callable[..., ComparisonData]) -> None:
    period = week_containing(datetime(2026, 12, 9, tzinfo=UTC), "UTC")
    chosen = select_comparisons(
        [_at(make_comparison, "old", datetime(2026, 11, 24, tzinfo=UTC), 1)],
        period=period,
        already_sent=set(),
        cap=8,
    )
    assert chosen.empty and chosen.more_count == 0


def test_draft_of_an_empty_week_is_a_clear_error(seeded: Session, settings: Settings) -> None:
    with pytest.raises(publish.EmptyWeek, match="no new comparisons were published in 2026-W50"):
        publish.draft_edition(
            seeded,
            settings=settings,
            newsletter_slug=None,
            at=datetime(2026, 12, 9, tzinfo=UTC),
        )


def test_draft_is_idempotent_and_excludes_what_a_sent_edition_carried(
    seeded: Session, settings: Settings, make_comparison: Callable[..., ComparisonData]
) -> None:
    at = datetime(2026, 11, 25, 12, tzinfo=UTC)
    first = publish.draft_edition(seeded, settings=settings, newsletter_slug=None, at=at)
    assert first.created and len(first.selection.items) == 4
    again = publish.draft_edition(seeded, settings=settings, newsletter_slug=None, at=at)
    assert not again.created and again.edition.id == first.edition.id
    # Mark the edition sent; a comparison re-dated into a later week is not mailed again.
    first.edition.status = EditionStatus.sent
    seeded.add(first.edition)
    carried = first.selection.items[0]
    store.upsert_comparisons(
        seeded,
        records=[
            carried.model_copy(update={"published_at": datetime(2026, 12, 1, tzinfo=UTC)}),
            make_comparison("fresh-one", published_at="2026-12-02T08:00:00+00:00"),
        ],
    )
    seeded.commit()
    later = publish.draft_edition(
        seeded, settings=settings, newsletter_slug=None, at=datetime(2026, 12, 3, tzinfo=UTC)
    )
    assert [c.slug for c in later.selection.items] == ["fresh-one"]


def test_draft_refresh_picks_up_late_comparisons(
    seeded: Session, settings: Settings, make_comparison: Callable[..., ComparisonData]
) -> None:
    at = datetime(2026, 11, 25, 12, tzinfo=UTC)
    first = publish.draft_edition(seeded, settings=settings, newsletter_slug=None, at=at)
    store.upsert_comparisons(
        seeded, records=[make_comparison("late-one", published_at="2026-11-27T08:00:00+00:00")]
    )
    seeded.commit()
    again = publish.draft_edition(seeded, settings=settings, newsletter_slug=None, at=at)
    assert again.edition.id == first.edition.id
    assert again.selection.items[0].slug == "late-one" and len(again.selection.items) == 5
    stored = store.edition_comparisons(seeded, edition_id=again.edition.id or 0)
    assert [c.slug for c in stored] == [c.slug for c in again.selection.items]
