"""Benchmark: how long after `edition send` the first message goes out on PostgreSQL, right
after a bulk load of the list, with and without the statistics that imports now refresh.

Creates a scratch database on the local server (NEWSLETTER_TEST_POSTGRES_URL, default
postgresql+psycopg://postgres@127.0.0.1:5432/postgres), bulk-inserts N subscribers (as an
import does, without its per-row checks), then either runs what ``import subscribers`` runs
after committing (``refresh_statistics``) or not (``--stale``: the tables as autovacuum has not
seen them yet), and times the start of the send (the audience fix) and the first batch.

    python bench/first_message.py --subscribers 50000
    python bench/first_message.py --subscribers 50000 --stale
"""

from __future__ import annotations

import argparse
import os
import time
import uuid

from render_send import bench_settings, seed_edition
from sqlalchemy import create_engine, text
from sqlmodel import Session

from newsletter import publish
from newsletter.backends.memory import MemoryBackend
from newsletter.storage.database import make_engine, upgrade
from newsletter.storage.planner import refresh_statistics

ADMIN = os.environ.get(
    "NEWSLETTER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=50_000)
    parser.add_argument("--stale", action="store_true", help="skip refresh_statistics (before)")
    args = parser.parse_args()
    name = f"bench_first_{uuid.uuid4().hex[:8]}"
    admin = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = ADMIN.rsplit("/", 1)[0] + f"/{name}"
    engine = make_engine(url)
    try:
        upgrade(engine)
        settings = bench_settings(url, journal_dir="off")
        with Session(engine, expire_on_commit=False) as session:
            edition_id = seed_edition(session, settings, args.subscribers)
            session.commit()
            if not args.stale:
                refresh_statistics(session, ("subscriber", "subscription"))
            first: list[float] = []
            t0 = time.perf_counter()
            added = publish.start_edition(session, edition_id=edition_id, settings=settings)
            started = time.perf_counter() - t0

            def on_batch(_: int) -> None:
                if not first:
                    first.append(time.perf_counter() - t0)
                    raise KeyboardInterrupt  # the first batch is all this measures

            try:
                publish.send_edition(
                    session,
                    edition_id=edition_id,
                    settings=settings,
                    backend=MemoryBackend(),
                    options=publish.SendOptions(on_batch=on_batch),
                )
            except KeyboardInterrupt:
                pass
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    state = "stale" if args.stale else "fresh"
    print(f"subscribers:            {args.subscribers:,} ({state} statistics)")
    print(f"audience fix:           {added:,} deliveries in {started:.2f} s")
    print(f"first batch recorded:   {first[0]:.2f} s after the start" if first else "no batch")


if __name__ == "__main__":
    main()
