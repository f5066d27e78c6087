"""Benchmark: the ledger after years of sends, on PostgreSQL.

Builds a scratch database on the local server (NEWSLETTER_TEST_POSTGRES_URL, default
postgresql+psycopg://postgres@127.0.0.1:5432/postgres) with N subscribers, then measures a
send's claims and records on an empty delivery table, loads E finished editions of P
deliveries each (500 x 100,000 = 50,000,000 rows by default), and measures again: claims and
records of a new edition, ``newsletter stats`` (``edition_stats``) with R provider reports
per finished edition (20,000 by default: 10M report events), the console's Numbers page
queries, and one edition's counts, each with the finished editions' kept counts (what the
engine does now) and without them (every delivery counted, as before). Prints EXPLAIN ANALYZE
of the queries that matter.

    python bench/ledger_scale.py                                  # 1M subscribers, 50M rows
    python bench/ledger_scale.py --subscribers 100000 --editions 50 --per-edition 10000
    python bench/ledger_scale.py --keep      # leave the database for a look (name printed)
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from render_send import bench_settings, seed_edition
from scratch import copy_edition, scratch_postgres
from sqlalchemy import Engine, event, select, text
from sqlmodel import Session, col

from newsletter import publish
from newsletter.operations.stats import edition_stats, list_growth
from newsletter.sending import ledger
from newsletter.storage.database import make_engine, upgrade
from newsletter.storage.models import Delivery
from newsletter.storage.planner import refresh_statistics

NOW = datetime(2026, 12, 1, 9, tzinfo=UTC)


def timed(label: str, run: Callable[[], object], repeat: int = 5) -> float:
    """Median milliseconds of ``repeat`` runs (after one warm-up run), printed."""
    run()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        times.append((time.perf_counter() - t0) * 1000)
    median = statistics.median(times)
    print(f"  {label:<58} {median:9.1f} ms  (min {min(times):.1f}, max {max(times):.1f})")
    return median


def claims_and_records(session: Session, edition_id: int, newsletter_id: int, n: int) -> None:
    """Claim and record ``n`` batches of 500 as a sender does; prints the median of each and
    where the claims' time went (each statement and the commits, summed over the claims)."""
    claim_ms, record_ms = [], []
    spent: dict[str, float] = {}
    started: list[float] = []
    engine = session.get_bind()
    # A claim slower than 100 ms leaves its plan, as it ran, in the server's log.
    session.execute(text("LOAD 'auto_explain'"))
    session.execute(text("SET auto_explain.log_min_duration = '100ms'"))
    session.execute(text("SET auto_explain.log_analyze = on"))
    session.execute(text("SET auto_explain.log_buffers = on"))
    session.commit()

    def on_before(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        started.append(time.perf_counter())

    def on_after(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        key = " ".join(statement.split())[:40]
        spent[key] = spent.get(key, 0.0) + (time.perf_counter() - started.pop()) * 1000

    after = 0
    for _ in range(n):
        t0 = time.perf_counter()
        for name, hook in (
            ("before_cursor_execute", on_before),
            ("after_cursor_execute", on_after),
        ):
            event.listen(engine, name, hook)
        batch = ledger.claim_batch(
            session,
            edition_id=edition_id,
            newsletter_id=newsletter_id,
            after_id=after,
            limit=500,
            owner="bench",
            lease_seconds=300,
            now=NOW,
        )
        claim_ms.append((time.perf_counter() - t0) * 1000)
        for name, hook in (
            ("before_cursor_execute", on_before),
            ("after_cursor_execute", on_after),
        ):
            event.remove(engine, name, hook)
        after = batch[-1].id
        outcomes = [
            ledger.Outcome(d.id, ledger.DeliveryStatus.sent, 250, message_id=f"<{d.id}@b>")
            for d in batch
        ]
        t0 = time.perf_counter()
        for start in range(0, len(outcomes), 50):  # as dispatch records: every 50 answers
            ledger.record(session, outcomes=outcomes[start : start + 50], owner="bench", now=NOW)
        session.commit()
        record_ms.append((time.perf_counter() - t0) * 1000)
    for key, ms in sorted(spent.items(), key=lambda kv: -kv[1]):
        print(f"    claims' time in {key:<44} {ms / n:8.1f} ms a claim")
    rest = statistics.mean(claim_ms) - sum(spent.values()) / n
    print(f"    claims' time in the commit and Python{'':<23} {rest:8.1f} ms a claim")
    print(
        f"  claim of 500 (median of {n}):{'':<29} {statistics.median(claim_ms):9.1f} ms\n"
        f"  record of 500, 10 statements (median of {n}):{'':<13} "
        f"{statistics.median(record_ms):9.1f} ms"
    )


def load_finished_editions(
    engine: Engine, newsletter_id: int, editions: int, per: int, reports: int
) -> None:
    """E sent editions with P sent deliveries each, written by SQL with the delivery indexes
    dropped and rebuilt after (setup, not measured; foreign keys are not checked while it
    loads: every row points at rows that exist), and R provider reports each."""
    with engine.begin() as conn:
        conn.execute(
            text(
                """
                INSERT INTO edition (newsletter_id, period_key, period_start, period_end,
                                     status, subject, preheader, more_count, send_started_at,
                                     sent_at, created_at)
                SELECT :nid, 'bench-' || g, :t0 - g * interval '7 days',
                       :t0 - g * interval '7 days', 'sent', 'Edition ' || g, '', 0,
                       :t0 - g * interval '7 days', :t0 - g * interval '7 days' + interval '1 hour',
                       :t0 - g * interval '7 days'
                FROM generate_series(1, :n) AS g
                """
            ),
            {"nid": newsletter_id, "t0": NOW - timedelta(days=7), "n": editions},
        )
        indexes = conn.execute(
            text(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'delivery' "
                "AND indexname NOT LIKE '%pkey'"
            )
        ).all()
        constraints = conn.execute(
            text(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = 'delivery'::regclass AND contype = 'u'"
            )
        ).all()
        for name, _ in constraints:
            conn.execute(text(f'ALTER TABLE delivery DROP CONSTRAINT "{name}"'))
        for name, _ in indexes:
            if name not in {c for c, _ in constraints}:
                conn.execute(text(f'DROP INDEX "{name}"'))
        conn.execute(text("SET session_replication_role = replica"))
        ids = [
            row[0]
            for row in conn.execute(
                text("SELECT id FROM edition WHERE period_key LIKE 'bench-%' ORDER BY id")
            )
        ]
    for k in range(0, len(ids), 25):
        t0 = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(text("SET session_replication_role = replica"))
            conn.execute(
                text(
                    """
                    INSERT INTO delivery (edition_id, subscriber_id, status, attempts,
                                          updated_at)
                    SELECT e, s, 'sent', 1, :t
                    FROM unnest(CAST(:ids AS integer[])) AS e,
                         generate_series(1, :per) AS s
                    """
                ),
                {"ids": ids[k : k + 25], "per": per, "t": NOW},
            )
        print(
            f"  loaded editions {k + 1}-{min(k + 25, len(ids))} ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    t0 = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(text("SET maintenance_work_mem = '1GB'"))
        for name, definition in constraints:
            conn.execute(text(f'ALTER TABLE delivery ADD CONSTRAINT "{name}" {definition}'))
        for name, definition in indexes:
            if name not in {c for c, _ in constraints}:
                conn.execute(text(definition))
    print(f"  indexes rebuilt ({time.perf_counter() - t0:.0f} s)")
    # The load ran with triggers off (replica role): write the counters they would have kept.
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO deliverytally (edition_id, shard, status, n) "
                "SELECT e, 0, 'sent', :per FROM unnest(CAST(:ids AS integer[])) AS e"
            ),
            {"ids": ids, "per": per},
        )
    if reports:
        load_reports(engine, ids, reports)
    with Session(engine) as session:
        for edition_id in ids:  # what finishing a send keeps (newsletter.sending.ledger.settle)
            ledger.settle(
                session,
                edition_id=edition_id,
                counts=ledger.counts(session, edition_id=edition_id, pruned=False)
                if edition_id == ids[0]
                else {"sent": per},
                now=NOW,
            )
        session.commit()
    t0 = time.perf_counter()
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.execute(text("VACUUM (ANALYZE) delivery"))
        conn.execute(text("ANALYZE edition, editioncounts"))
    print(f"  vacuum and analyze ({time.perf_counter() - t0:.0f} s)")


def load_reports(engine: Engine, ids: list[int], per: int) -> None:
    """Per edition: ``per`` delivered reports (one per person), a fiftieth as many hard
    bounces, a five-hundredth complaints and a hundredth unsubscribes through its links; then
    the counters the triggers keep, computed as migration 0021 computes them for events
    already there."""
    t0 = time.perf_counter()
    for k in range(0, len(ids), 25):
        with engine.begin() as conn:
            conn.execute(text("SET session_replication_role = replica"))
            for kind, share in (("delivered", 1), ("bounced_hard", 50), ("complained", 500)):
                conn.execute(
                    text(
                        """
                        INSERT INTO mailevent (provider, provider_event_id, kind, email_key,
                                               subscriber_id, edition_id, occurred_at,
                                               created_at)
                        SELECT 'bench', e || '-' || :kind || '-' || s, :kind,
                               'sub' || s || '@example.com', s, e, :t, :t
                        FROM unnest(CAST(:ids AS integer[])) AS e,
                             generate_series(1, :n) AS s
                        """
                    ),
                    {"ids": ids[k : k + 25], "n": per // share, "kind": kind, "t": NOW},
                )
            conn.execute(
                text(
                    """
                    INSERT INTO subscriptionevent (subscriber_id, newsletter_id, edition_id,
                                                   kind, source, created_at)
                    SELECT s, NULL, e, 'unsubscribed', 'one-click', :t
                    FROM unnest(CAST(:ids AS integer[])) AS e, generate_series(1, :n) AS s
                    """
                ),
                {"ids": ids[k : k + 25], "n": per // 100, "t": NOW},
            )
    with engine.begin() as conn:
        for rows in (
            "SELECT edition_id AS e, kind AS w, count(DISTINCT subscriber_id) AS k "
            "FROM mailevent WHERE edition_id = ANY(:ids) GROUP BY edition_id, kind",
            "SELECT edition_id AS e, 'bounced' AS w, count(DISTINCT subscriber_id) AS k "
            "FROM mailevent WHERE edition_id = ANY(:ids) "
            "AND kind IN ('bounced_hard', 'bounced_soft') GROUP BY edition_id",
            "SELECT edition_id AS e, w, count(DISTINCT subscriber_id) AS k FROM "
            "subscriptionevent, (VALUES ('unsubscribed'), ('unsubscribed:one-click')) AS v(w) "
            "WHERE edition_id = ANY(:ids) AND kind = 'unsubscribed' GROUP BY edition_id, w",
        ):
            conn.execute(
                text(
                    "INSERT INTO editionreport (edition_id, what, shard, n) "
                    f"SELECT c.e, c.w, 0, c.k FROM ({rows}) AS c"
                ),
                {"ids": ids},
            )
        conn.execute(text("ANALYZE mailevent, subscriptionevent, editionreport, deliverytally"))
    print(f"  {per:,} reports per edition loaded ({time.perf_counter() - t0:.0f} s)")


def explain_calls(session: Session, label: str, call: Callable[[], object]) -> None:
    """EXPLAIN ANALYZE every statement ``call`` sends, as it sent them (captured from the
    driver, then re-run under EXPLAIN in a transaction that is rolled back)."""
    sent: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        if not statement.lstrip().upper().startswith(("EXPLAIN", "SAVEPOINT", "RELEASE")):
            sent.append((statement, parameters))

    engine = session.get_bind()
    event.listen(engine, "before_cursor_execute", capture)
    try:
        call()
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    raw = engine.raw_connection()  # type: ignore[union-attr]
    try:
        cursor = raw.cursor()
        for statement, parameters in sent:
            if not statement.lstrip().upper().startswith(("SELECT", "UPDATE", "WITH")):
                continue
            print(f"\nEXPLAIN ANALYZE: {label}: {' '.join(statement.split())[:100]}…")
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
            for (line,) in cursor.fetchall():
                print(f"    {line}")
        raw.rollback()
    finally:
        raw.close()


def explain(session: Session, label: str, sql: str, params: dict[str, object]) -> None:
    print(f"\nEXPLAIN ANALYZE: {label}")
    for (line,) in session.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + sql), params):
        print(f"    {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--editions", type=int, default=500)
    parser.add_argument("--per-edition", type=int, default=100_000)
    parser.add_argument(
        "--reports",
        type=int,
        default=20_000,
        help="delivered reports per finished edition (plus 1/50 hard bounces, 1/500 "
        "complaints, 1/100 unsubscribes)",
    )
    parser.add_argument("--batches", type=int, default=40, help="claims measured per phase")
    parser.add_argument("--keep", action="store_true", help="leave the scratch database")
    args = parser.parse_args()
    with scratch_postgres("bench_ledger", keep=args.keep) as url:
        run(url, args)


def run(url: str, args: argparse.Namespace) -> None:
    engine = make_engine(url)
    try:
        upgrade(engine)
        settings = bench_settings(url, journal_dir="off")
        with Session(engine, expire_on_commit=False) as session:
            print(f"database {url.rsplit('/', 1)[-1]}: {args.subscribers:,} subscribers")
            first = seed_edition(session, settings, args.subscribers)
            session.commit()
            refresh_statistics(session, ("subscriber", "subscription"))
            newsletter_id = publish.default_newsletter(session, settings).id or 0
            t0 = time.perf_counter()
            publish.start_edition(session, edition_id=first, settings=settings, now=NOW)
            print(f"  audience fix of a new edition: {time.perf_counter() - t0:.1f} s")
            print("\nan empty ledger (one edition open):")
            claims_and_records(session, first, newsletter_id, args.batches)

            rows = args.editions * args.per_edition
            print(f"\nloading {args.editions} finished editions x {args.per_edition:,} = {rows:,}")
            load_finished_editions(
                engine, newsletter_id, args.editions, args.per_edition, args.reports
            )
            second, other_newsletter = copy_edition(session, first, "bench-two")
            session.commit()
            refresh_statistics(session, ("subscription",))
            t0 = time.perf_counter()
            publish.start_edition(session, edition_id=second, settings=settings, now=NOW)
            print(f"  audience fix of a new edition: {time.perf_counter() - t0:.1f} s")
            total = session.execute(text("SELECT count(*) FROM delivery")).scalar_one()
            print(f"\nwith {total:,} delivery rows:")
            claims_and_records(session, second, other_newsletter, args.batches)

            explain_calls(
                session,
                "claim",
                lambda: ledger.claim_batch(
                    session,
                    edition_id=second,
                    newsletter_id=other_newsletter,
                    after_id=0,
                    limit=500,
                    owner="explain",
                    lease_seconds=300,
                    now=NOW,
                ),
            )
            print("\nreports (kept counts for finished editions, as the engine does now):")
            timed("newsletter stats (edition_stats, every edition)", lambda: edition_stats(session))
            timed(
                "console Numbers: weekly growth, 12 weeks",
                lambda: list_growth(session, until=NOW, weeks=12),
            )
            timed(
                "one finished edition's counts (ledger.counts)",
                lambda: ledger.counts(session, edition_id=second - 1),
            )
            timed(
                "the sending edition's counts (ledger.counts, 1M rows)",
                lambda: ledger.counts(session, edition_id=second),
            )
            timed(
                "the console's send page (ledger.progress)",
                lambda: ledger.progress(session, edition_id=second, now=NOW),
            )
            timed(
                "its counts by counting its rows (before the counters, 0020)",
                lambda: session.execute(
                    text(
                        "SELECT status, count(*) FROM delivery WHERE edition_id = :e "
                        "GROUP BY status"
                    ),
                    {"e": second},
                ).all(),
            )
            explain(
                session,
                "counting a sending edition's rows by status",
                "SELECT status, count(*) FROM delivery WHERE edition_id = :e GROUP BY status",
                {"e": second},
            )
            chosen = (
                select(col(Delivery.id))
                .where(
                    col(Delivery.edition_id) == second,
                    col(Delivery.id) > 0,
                    ledger.claimable(NOW),
                )
                .order_by(col(Delivery.id))
                .limit(500)
                .compile(dialect=engine.dialect, compile_kwargs={"render_postcompile": True})
            )
            print("\nEXPLAIN ANALYZE: the ids a claim of 500 on the sending edition takes")
            for line in session.connection().exec_driver_sql(
                f"EXPLAIN (ANALYZE, BUFFERS) {chosen}", dict(chosen.params)
            ):
                print(f"    {line[0]}")
            for open_edition in (first, second):  # as if both had finished: kept counts
                ledger.settle(
                    session,
                    edition_id=open_edition,
                    counts=ledger.counts(session, edition_id=open_edition),
                    now=NOW,
                )
            session.commit()
            print("\nreports when no edition is sending (every edition's counts kept):")
            timed("newsletter stats (edition_stats, every edition)", lambda: edition_stats(session))
            session.execute(text("DELETE FROM editioncounts"))
            session.commit()
            print("\nreports without kept counts (every edition from the database's counters):")
            timed("newsletter stats (edition_stats, every edition)", lambda: edition_stats(session))
            print("\nand counting every delivery and report instead (before the counters):")
            timed(
                "every edition's reports, people once, counted (before 0021)",
                lambda: session.execute(
                    text(
                        "SELECT edition_id, count(DISTINCT CASE WHEN kind = 'delivered' "
                        "THEN subscriber_id END), count(DISTINCT CASE WHEN kind IN "
                        "('bounced_hard', 'bounced_soft') THEN subscriber_id END), "
                        "count(DISTINCT CASE WHEN kind = 'complained' THEN subscriber_id END) "
                        "FROM mailevent WHERE edition_id IS NOT NULL GROUP BY edition_id"
                    )
                ).all(),
                repeat=2,
            )
            timed(
                "every edition's deliveries by state, counted",
                lambda: session.execute(
                    text("SELECT edition_id, status, count(*) FROM delivery GROUP BY 1, 2")
                ).all(),
                repeat=2,
            )
            timed(
                "one finished edition's counts (ledger.counts)",
                lambda: ledger.counts(session, edition_id=second - 1),
            )
    finally:
        engine.dispose()


if __name__ == "__main__":
    main()
