"""Benchmark: one edition sent to N subscribers (default 100,000) from SQLite, memory backend.

Prints microseconds per recipient for personalization + message bytes (measured inside the send,
around ``MessageTemplate.build``), end-to-end messages per second including the ledger, and peak
RSS. The memory backend runs with ``retain=0``: it counts messages instead of keeping 100,000
copies, so the figure is the engine's memory, not the test double's.

    python bench/render_send.py --subscribers 100000
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert, literal
from sqlmodel import Session

from newsletter import publish
from newsletter.allocator import keep_freed_memory
from newsletter.audience import importing
from newsletter.backends import memory
from newsletter.config import Settings
from newsletter.edition.personalization import MessageTemplate
from newsletter.paths import example_comparisons
from newsletter.storage.database import make_engine, upgrade
from newsletter.storage.models import Subscriber, Subscription, UTCDateTime

#: The key every benchmark signs with: fixed, so runs are alike; never a deployment's.
SECRET = "jSM_fpdULLsAnDPLamSSg-IqWFEUcGPqlC-6IO0uVQ2Yav__60iPWA"


def bench_settings(database_url: str, **extra: Any) -> Settings:
    """Settings for a benchmark: this database, :data:`SECRET`, the example site, no ``.env``
    (a developer's own settings must not change a figure)."""
    return Settings(
        database_url=database_url,
        secret_key=SECRET,
        base_url="https://news.example.com",
        _env_file=None,  # type: ignore[call-arg]
        **extra,
    )


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def seed_subscribers(session: Session, newsletter_id: int, n: int) -> None:
    """N subscribers and their subscriptions, with bulk inserts (setup, not measured)."""
    chunk = 10_000
    now = datetime.now(UTC)
    for start in range(0, n, chunk):
        rows = [
            {
                "email": f"reader{i}@example.com",
                "email_key": f"reader{i}@example.com",
                "name": f"Reader {i}" if i % 3 else None,
                "created_at": now,
            }
            for i in range(start, min(n, start + chunk))
        ]
        session.execute(insert(Subscriber), rows)
    session.execute(
        insert(Subscription).from_select(
            ["subscriber_id", "newsletter_id", "status", "created_at", "updated_at"],
            Subscriber.__table__.select().with_only_columns(  # type: ignore[attr-defined]
                Subscriber.__table__.c.id,  # type: ignore[attr-defined]
                literal(newsletter_id),
                literal("active"),
                literal(now, UTCDateTime()),
                literal(now, UTCDateTime()),
            ),
        )
    )
    session.commit()


def seed_edition(session: Session, settings: Settings, subscribers: int) -> int:
    """The setup every benchmark shares: the default newsletter, the example comparisons, N
    subscribers and the draft edition for the examples' week; returns the edition id."""
    newsletter = publish.default_newsletter(session, settings)
    importing.import_comparisons(session, path=example_comparisons())
    session.commit()
    seed_subscribers(session, newsletter.id or 0, subscribers)
    draft = publish.draft_edition(
        session, settings=settings, newsletter_slug=None, at=datetime(2026, 11, 25, tzinfo=UTC)
    )
    return draft.edition.id or 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument(
        "--default-malloc", action="store_true", help="skip the allocator tuning, to compare"
    )
    args = parser.parse_args()
    if not args.default_malloc:
        keep_freed_memory()  # as the `newsletter` command does

    with tempfile.TemporaryDirectory() as tmp:
        settings = bench_settings(f"sqlite:///{Path(tmp) / 'bench.db'}", batch_size=args.batch_size)
        engine = make_engine(settings.database_url)
        upgrade(engine)
        with Session(engine, expire_on_commit=False) as session:
            t0 = time.perf_counter()
            edition_id = seed_edition(session, settings, args.subscribers)
            seeded_s = time.perf_counter() - t0
            rss_before = peak_rss_mib()

            build_ns = 0
            real_build = MessageTemplate.build

            def timed_build(self: MessageTemplate, *a, **k):  # type: ignore[no-untyped-def]
                nonlocal build_ns
                start = time.perf_counter_ns()
                message = real_build(self, *a, **k)
                build_ns += time.perf_counter_ns() - start
                return message

            MessageTemplate.build = timed_build  # type: ignore[method-assign]
            memory.reset()
            t1 = time.perf_counter()
            report = publish.send_edition(
                session,
                edition_id=edition_id,
                settings=settings,
                backend=memory.MemoryBackend(retain=False),
            )
            send_s = time.perf_counter() - t1
            MessageTemplate.build = real_build  # type: ignore[method-assign]
        engine.dispose()

    n = memory.counters.messages
    assert n == args.subscribers == report.run.sent, (n, report.run)
    print(f"subscribers:            {args.subscribers:,}")
    print(f"seed (setup, not timed): {seeded_s:.1f} s")
    print(f"messages sent:          {n:,} ({memory.counters.bytes / n / 1024:.1f} KiB each)")
    print(f"personalization+bytes:  {build_ns / n / 1000:.1f} us per recipient")
    print(
        f"send end to end:        {send_s:.1f} s = {n / send_s:,.0f} messages/s "
        f"({send_s / n * 1e6:.1f} us per recipient, ledger included)"
    )
    print(
        f"peak RSS:               {peak_rss_mib():.0f} MiB (before the send: {rss_before:.0f} MiB)"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
