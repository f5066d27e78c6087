"""Benchmark: the start of a send (the audience fix: one delivery row per subscriber) on
PostgreSQL, with the schema as migrated and with delivery's two foreign keys put back (as
before migration 0022).

Creates a scratch database (NEWSLETTER_TEST_POSTGRES_URL, default
postgresql+psycopg://postgres@127.0.0.1:5432/postgres), loads N subscribers by SQL, analyzes,
then starts ``--rounds`` editions for each variant, alternating, each in a newsletter of
its own with the same subscribers (a checkpoint before each start, so none pays for another's
writes), and prints every time. (A partial provider-id index was compared the same way
earlier: no measurable difference, so it was not adopted.)

    python bench/audience_fix.py --subscribers 1000000 --rounds 2
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime

from render_send import bench_settings
from scratch import copy_edition, load_audience, scratch_postgres
from sqlalchemy import text
from sqlmodel import Session

from newsletter import publish
from newsletter.config import Settings
from newsletter.storage.database import make_engine, upgrade
from newsletter.storage.planner import refresh_statistics

NOW = datetime(2026, 12, 1, 9, tzinfo=UTC)
#: Delivery's foreign keys before migration 0022, put back for the "keys" variant.
KEYS = (
    ("delivery_edition_id_fkey", "edition_id", "edition"),
    ("delivery_subscriber_id_fkey", "subscriber_id", "subscriber"),
)


def start_one(
    session: Session, settings: Settings, template: int, round_: int, variant: str
) -> float:
    """A copy of the ``template`` edition in a newsletter of its own with every subscriber;
    seconds its start took."""
    edition_id, _ = copy_edition(session, template, f"n-{variant}-{round_}")
    session.commit()
    refresh_statistics(session, ("subscription",))
    session.execute(text("CHECKPOINT"))
    session.commit()
    t0 = time.perf_counter()
    publish.start_edition(session, edition_id=edition_id, settings=settings, now=NOW)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with scratch_postgres("bench_audience") as url:
        run(url, args)


def run(url: str, args: argparse.Namespace) -> None:
    engine = make_engine(url)
    settings = bench_settings(url, journal_dir="off")
    times: dict[str, list[float]] = {"schema": [], "keys": []}
    try:
        upgrade(engine)
        with Session(engine, expire_on_commit=False) as session:
            load_audience(session, settings, args.subscribers, NOW)
            template = (
                publish.draft_edition(
                    session,
                    settings=settings,
                    newsletter_slug=None,
                    at=datetime(2026, 11, 25, tzinfo=UTC),
                ).edition.id
                or 0
            )
            for round_ in range(args.rounds):
                for variant in ("keys", "schema"):
                    for name, column, table in KEYS:
                        session.execute(
                            text(f"ALTER TABLE delivery DROP CONSTRAINT IF EXISTS {name}")
                        )
                        if variant == "keys":
                            session.execute(
                                text(
                                    f"ALTER TABLE delivery ADD CONSTRAINT {name} FOREIGN KEY "
                                    f"({column}) REFERENCES {table} (id)"
                                )
                            )
                    session.commit()
                    took = start_one(session, settings, template, round_, variant)
                    times[variant].append(took)
                    print(f"  round {round_ + 1}, {variant:7}: {took:5.1f} s", flush=True)
        for variant, found in times.items():
            print(
                f"{variant:7}: median {statistics.median(found):.1f} s of "
                f"{args.subscribers:,} deliveries ({', '.join(f'{t:.1f}' for t in found)})"
            )
    finally:
        engine.dispose()


if __name__ == "__main__":
    main()
