"""Benchmark: claims on a ledger kept by ``bench/ledger_scale.py --keep``, round by round.

Finds the edition still sending (the 1M-row one), prints EXPLAIN (ANALYZE, BUFFERS, WAL) of
a claim of rows nobody has claimed yet (in a transaction rolled back), then runs rounds of 20
claims of 500 through ``ledger.claim_batch`` ("one", what the engine does) or the two-statement
claim it replaced ("two": SELECT ... FOR UPDATE SKIP LOCKED, then UPDATE), marking each batch
sent in between, and prints each round's median.

    python bench/ledger_scale.py --keep          # prints: kept database bench_ledger_...
    python bench/claim_rounds.py bench_ledger_5b7cd7b2 one two one two
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from scratch import ADMIN
from sqlalchemy import text
from sqlmodel import Session

from newsletter.sending import ledger
from newsletter.storage.database import make_engine

NOW = datetime(2026, 12, 1, 9, tzinfo=UTC)
LEASE = {"u": NOW + timedelta(seconds=300)}


def next_after(session: Session, edition: int) -> int:
    """The cursor a sender would hold: past every row already taken."""
    return session.execute(
        text(
            "SELECT coalesce(max(id), 0) FROM delivery WHERE edition_id = :e "
            "AND status <> 'pending'"
        ),
        {"e": edition},
    ).scalar_one()


def claim_one(session: Session, edition: int, newsletter: int, after: int) -> Sequence[int]:
    batch = ledger.claim_batch(
        session,
        edition_id=edition,
        newsletter_id=newsletter,
        after_id=after,
        limit=500,
        owner="rounds",
        lease_seconds=300,
        now=NOW,
    )
    return [d.id for d in batch]


def claim_two(session: Session, edition: int, newsletter: int, after: int) -> Sequence[int]:
    ids = list(
        session.execute(
            text(
                "SELECT id FROM delivery WHERE edition_id = :e AND id > :a "
                "AND status IN ('pending', 'deferred') AND (retry_at IS NULL OR retry_at <= :n) "
                "ORDER BY id LIMIT 500 FOR UPDATE SKIP LOCKED"
            ),
            {"e": edition, "a": after, "n": NOW},
        ).scalars()
    )
    session.execute(
        text(
            "UPDATE delivery SET status = 'claimed', lease_owner = 'rounds', lease_until = :u "
            "WHERE id = ANY(:ids)"
        ),
        {**LEASE, "ids": ids},
    )
    session.commit()
    return ids


def explain_fresh(url: str, edition: int, after: int) -> None:
    engine = make_engine(url)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute(
            "EXPLAIN (ANALYZE, BUFFERS, WAL) UPDATE delivery SET status = 'claimed', "
            "lease_owner = 'rounds', lease_until = %(u)s WHERE id IN (SELECT id FROM delivery "
            "WHERE edition_id = %(e)s AND id > %(a)s AND status IN ('pending', 'deferred') "
            "ORDER BY id LIMIT 500 FOR UPDATE SKIP LOCKED)",
            {**LEASE, "e": edition, "a": after},
        )
        print("EXPLAIN of a claim of fresh rows, as the planner chooses without help:")
        for (line,) in cursor.fetchall():
            print(f"    {line}")
        raw.rollback()
    finally:
        raw.close()
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("database", help="the name ledger_scale.py --keep printed")
    parser.add_argument("rounds", nargs="*", choices=["one", "two"], default=["one", "two"])
    args = parser.parse_args()
    url = ADMIN.rsplit("/", 1)[0] + f"/{args.database}"
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            edition, newsletter = session.execute(
                text(
                    "SELECT id, newsletter_id FROM edition WHERE status = 'sending' "
                    "ORDER BY id DESC LIMIT 1"
                )
            ).one()
            explain_fresh(url, edition, next_after(session, edition))
            claims = {"one": claim_one, "two": claim_two}
            for name in args.rounds:
                times = []
                for _ in range(20):
                    after = next_after(session, edition)
                    t0 = time.perf_counter()
                    claims[name](session, edition, newsletter, after)
                    times.append((time.perf_counter() - t0) * 1000)
                    session.execute(
                        text(
                            "UPDATE delivery SET status = 'sent' WHERE edition_id = :e "
                            "AND status = 'claimed' AND lease_owner = 'rounds'"
                        ),
                        {"e": edition},
                    )
                    session.commit()
                print(
                    f"{name}: median {statistics.median(times):.1f} ms a claim of 500 "
                    f"(min {min(times):.1f}, max {max(times):.1f})"
                )
    finally:
        engine.dispose()


if __name__ == "__main__":
    main()
