"""Benchmark: `newsletter ledger prune` of one finished edition on PostgreSQL, where the
provider reported every message (one `mailevent` row per delivery, as webhooks do).

For each variant, a scratch database (NEWSLETTER_TEST_POSTGRES_URL, default
postgresql+psycopg://postgres@127.0.0.1:5432/postgres) gets N subscribers, a sent edition with
N deliveries and N delivered reports pointing at them, all by SQL, analyzed; then
``retention.prune`` deletes the edition's rows and the time is printed.

``schema``: the tables as migrated. ``no-index``: without the index on
``mailevent.delivery_id`` (as before migration 0023): every deleted delivery makes PostgreSQL
look for reports still pointing at it (the foreign key's check), a scan of the whole report
table each time, so the prune grows with deliveries times reports.

    python bench/prune.py --deliveries 100000
    python bench/prune.py --deliveries 20000 --variants schema,no-index
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta

from render_send import bench_settings
from scratch import load_audience, scratch_postgres
from sqlalchemy import text
from sqlmodel import Session

from newsletter import publish
from newsletter.operations import retention
from newsletter.storage.database import make_engine, upgrade

#: The examples' week, when the edition was sent; the prune runs 120 days later.
SENT = datetime(2026, 11, 25, 9, tzinfo=UTC)
NOW = SENT + timedelta(days=120)


def load(session: Session, url: str, deliveries: int) -> int:
    """N subscribers, one sent edition with N sent deliveries and a delivered report for
    each, by SQL; returns the edition id."""
    settings = bench_settings(url, journal_dir="off")
    load_audience(session, settings, deliveries, SENT)
    edition_id = (
        publish.draft_edition(
            session, settings=settings, newsletter_slug=None, at=SENT, now=SENT
        ).edition.id
        or 0
    )
    publish.start_edition(session, edition_id=edition_id, settings=settings, now=SENT)
    session.execute(
        text("UPDATE delivery SET status = 'sent', updated_at = :t WHERE edition_id = :e"),
        {"t": SENT, "e": edition_id},
    )
    session.execute(
        text("UPDATE edition SET status = 'sent', sent_at = :t WHERE id = :e"),
        {"t": SENT, "e": edition_id},
    )
    session.commit()
    # 50,000 reports a transaction: the report counters' trigger locks at most 256 buckets a
    # statement (migration 0024); under 0021's lock per person this had to be 2,000.
    first, last = session.execute(
        text("SELECT min(id), max(id) FROM delivery WHERE edition_id = :e"), {"e": edition_id}
    ).one()
    for start in range(first, last + 1, 50_000):
        session.execute(
            text(
                "INSERT INTO mailevent (provider, provider_event_id, kind, email_key, "
                "subscriber_id, delivery_id, edition_id, occurred_at, created_at) "
                "SELECT 'bench', 'ev-' || d.id, 'delivered', r.email_key, d.subscriber_id, "
                "d.id, d.edition_id, :t, :t FROM delivery AS d JOIN subscriber AS r "
                "ON r.id = d.subscriber_id WHERE d.edition_id = :e "
                "AND d.id >= :start AND d.id < :end"
            ),
            {"t": SENT, "e": edition_id, "start": start, "end": start + 50_000},
        )
        session.commit()
    session.execute(text("ANALYZE delivery, mailevent, edition"))
    session.commit()
    return edition_id


def run(variant: str, deliveries: int) -> float:
    """Seconds the prune of a fresh database of this ``variant`` took."""
    with scratch_postgres("bench_prune") as url:
        engine = make_engine(url)
        try:
            upgrade(engine)
            with Session(engine, expire_on_commit=False) as session:
                load(session, url, deliveries)
                if variant == "no-index":
                    session.execute(text("DROP INDEX ix_mailevent_delivery_id"))
                    session.commit()
                t0 = time.perf_counter()
                report = retention.prune(session, older_than=NOW - timedelta(days=90), now=NOW)
                took = time.perf_counter() - t0
                assert report.rows == deliveries, report
                left = session.execute(text("SELECT count(*) FROM delivery")).scalar()
                assert left == 0, left
        finally:
            engine.dispose()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=100_000)
    parser.add_argument("--variants", default="schema", help="comma-separated: schema,no-index")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    for round_ in range(args.rounds):
        for variant in args.variants.split(","):
            took = run(variant, args.deliveries)
            print(
                f"round {round_ + 1}, {variant:8}: {args.deliveries:,} deliveries and reports "
                f"pruned in {took:.2f} s ({args.deliveries / took:,.0f} rows/s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
