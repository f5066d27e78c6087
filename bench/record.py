"""Benchmark: recording a send's answers in the ledger, microseconds of CPU per answer.

N deliveries (default 20,000) are claimed on SQLite, then recorded as sent in chunks of 50
with a commit after each, as a send does. Two variants, alternating:

- ``accepted``: what a send does (``ledger.record`` puts accepted answers in a compact
  statement, 4 values a row, passed to the driver as they are);
- ``general``: the same answers through the 8-named-parameter statement every answer took
  before (they carry a retry time, which is what sends an answer there; the statement, its
  triggers and its indexes are the same).

    python bench/record.py --deliveries 20000 --rounds 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from render_send import bench_settings, seed_edition
from sqlalchemy import text
from sqlmodel import Session

from newsletter.sending import ledger
from newsletter.sending.ledger import Outcome
from newsletter.storage.database import make_engine, upgrade
from newsletter.storage.models import DeliveryStatus

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
CHUNK = 50


def one_round(deliveries: int, variant: str) -> float:
    """CPU microseconds per recorded answer for ``variant`` on a fresh database."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = bench_settings(f"sqlite:///{Path(tmp) / 'bench.db'}", batch_size=500)
        engine = make_engine(settings.database_url)
        upgrade(engine)
        with Session(engine, expire_on_commit=False) as session:
            edition_id = seed_edition(session, settings, deliveries)
            newsletter_id = session.execute(
                text("SELECT newsletter_id FROM edition WHERE id = :e"), {"e": edition_id}
            ).scalar_one()
            ledger.open_deliveries(session, edition_id=edition_id, newsletter_id=newsletter_id)
            session.execute(
                text(
                    "UPDATE delivery SET status = 'claimed', lease_owner = 'bench' "
                    "WHERE edition_id = :e"
                ),
                {"e": edition_id},
            )
            session.commit()
            ids = list(
                session.execute(
                    text("SELECT id FROM delivery WHERE edition_id = :e ORDER BY id"),
                    {"e": edition_id},
                ).scalars()
            )
            retry = NOW + timedelta(hours=1) if variant == "general" else None
            spent = 0.0
            for start in range(0, len(ids), CHUNK):
                outcomes = [
                    Outcome(i, DeliveryStatus.sent, message_id=f"<nl.{i}@bench>", retry_at=retry)
                    for i in ids[start : start + CHUNK]
                ]
                t0 = time.process_time()
                ledger.record(session, outcomes=outcomes, owner="bench", now=NOW)
                session.commit()
                spent += time.process_time() - t0
            sent = session.execute(
                text("SELECT count(*) FROM delivery WHERE status = 'sent'")
            ).scalar_one()
            assert sent == len(ids), (sent, len(ids))
        engine.dispose()
    return spent / len(ids) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    for r in range(1, args.rounds + 1):
        for variant in ("general", "accepted"):
            us = one_round(args.deliveries, variant)
            print(f"round {r}, {variant:8}: {us:5.1f} us CPU per answer ({args.deliveries:,})")


if __name__ == "__main__":
    main()
