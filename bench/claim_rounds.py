"""Benchmark: claims on a ledger kept by ``bench/ledger_scale.py --keep``, round by round.

Finds the edition still sending (the 1M-row one), prints EXPLAIN (ANALYZE, BUFFERS, WAL) of
the engine's claim of rows nobody has claimed yet, without and with its planner settings (in
transactions rolled back), then runs rounds of 20 claims of 500 through ``ledger.claim_batch``
("one", what the engine does) or the two-statement claim it replaced ("two": SELECT ... FOR
UPDATE SKIP LOCKED with the same ``ledger.claimable`` predicate, then UPDATE), marking each
batch sent in between, and prints each round's median.

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
from sqlalchemy import Engine, Integer, any_, bindparam, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlmodel import Session, col

from newsletter.sending import ledger
from newsletter.storage.database import make_engine
from newsletter.storage.models import Delivery, DeliveryStatus, EditionStatus

NOW = datetime(2026, 12, 1, 9, tzinfo=UTC)
LEASE_UNTIL = NOW + timedelta(seconds=300)


def next_after(session: Session, edition: int) -> int:
    """The cursor a sender would hold: past every row already taken."""
    return session.execute(
        text("SELECT coalesce(max(id), 0) FROM delivery WHERE edition_id = :e AND status <> :p"),
        {"e": edition, "p": DeliveryStatus.pending.value},
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
            select(col(Delivery.id))
            .where(
                col(Delivery.edition_id) == edition,
                col(Delivery.id) > after,
                ledger.claimable(NOW),
            )
            .order_by(col(Delivery.id))
            .limit(500)
            .with_for_update(skip_locked=True)
        ).scalars()
    )
    session.execute(
        update(Delivery)
        .where(col(Delivery.id) == any_(bindparam("ids", ids, type_=ARRAY(Integer))))
        .values(status=DeliveryStatus.claimed.value, lease_owner="rounds", lease_until=LEASE_UNTIL)
    )
    session.commit()
    return ids


def explain_claim(engine: Engine, edition: int, after: int, *, planned: bool) -> list[str]:
    """EXPLAIN (ANALYZE, BUFFERS, WAL) of the engine's claim of 500 past ``after`` (its very
    statement, :func:`newsletter.sending.ledger.claim_statement`), rolled back; ``planned``
    runs the claim's planner settings (:data:`newsletter.sending.ledger.CLAIM_PLAN`) first, as
    the engine does."""
    claim = ledger.claim_statement(
        "postgresql",
        edition_id=edition,
        after_id=after,
        limit=500,
        owner="rounds",
        lease_until=LEASE_UNTIL,
        now=NOW,
    ).compile(dialect=engine.dialect, compile_kwargs={"render_postcompile": True})
    with engine.connect() as conn:
        if planned:
            conn.execute(ledger.CLAIM_PLAN)
        plan = conn.exec_driver_sql(
            f"EXPLAIN (ANALYZE, BUFFERS, WAL) {claim}", dict(claim.params)
        ).scalars()
        lines = [str(line) for line in plan]
        conn.rollback()
    return lines


def explain_fresh(url: str, edition: int, after: int) -> None:
    engine = make_engine(url)
    try:
        for planned, how in ((False, "as the planner chooses without help"), (True, "as run")):
            print(f"EXPLAIN of a claim of fresh rows, {how}:")
            for line in explain_claim(engine, edition, after, planned=planned):
                print(f"    {line}")
    finally:
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
                    "SELECT id, newsletter_id FROM edition WHERE status = :s "
                    "ORDER BY id DESC LIMIT 1"
                ),
                {"s": EditionStatus.sending.value},
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
                        update(Delivery)
                        .where(
                            col(Delivery.edition_id) == edition,
                            col(Delivery.status) == DeliveryStatus.claimed.value,
                            col(Delivery.lease_owner) == "rounds",
                        )
                        .values(status=DeliveryStatus.sent.value)
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
