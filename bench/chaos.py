"""Chaos: kill -9 the sending worker at random moments, then check nobody was lost.

Starts the minimal SMTP sink (bench/smtp_sink.py) in its own process, seeds N subscribers in
SQLite, starts one edition, then runs ``newsletter worker`` processes and kills each with
SIGKILL after a random time, ``--kills`` times; a last worker finishes the edition once the dead
ones' leases expire. Then it compares the Message-IDs the sink received with the ledger and
prints losses (ledger says sent, sink never got it, or never sent at all), duplicates, and
the deliveries left ``unknown`` (a sender killed after handing a message over and before reading
the answer: not sent again; the sink tells whether they arrived).

    python bench/chaos.py --subscribers 100000 --kills 5
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from render_send import SECRET, bench_settings, seed_edition
from sqlalchemy import text
from sqlmodel import Session

from newsletter import publish
from newsletter.edition.personalization import instance_tag
from newsletter.sending import ledger
from newsletter.storage.database import make_engine, upgrade

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--port", type=int, default=2598)
    parser.add_argument(
        "--lease", type=float, default=3.0, help="lease seconds (short, to resume fast)"
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--no-journal", action="store_true", help="without the write-ahead journal (the before)"
    )
    args = parser.parse_args()
    rng = random.Random(args.seed)

    tmp = Path(tempfile.mkdtemp(prefix="chaos-"))
    ids_file = tmp / "ids.txt"
    sink = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "smtp_sink.py"),
            "--port",
            str(args.port),
            "--ids",
            str(ids_file),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
    db_url = f"sqlite:///{tmp / 'chaos.db'}"
    settings = bench_settings(db_url)
    engine = make_engine(db_url)
    upgrade(engine)
    with Session(engine, expire_on_commit=False) as session:
        edition_id = seed_edition(session, settings, args.subscribers)
        publish.start_edition(session, edition_id=edition_id, settings=settings)

    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update(
        NEWSLETTER_DATABASE_URL=db_url,
        NEWSLETTER_MAIL_BACKEND=f"smtp://127.0.0.1:{args.port}",
        NEWSLETTER_SECRET_KEY=SECRET,
        NEWSLETTER_BASE_URL="https://news.example.com",
        NEWSLETTER_LEASE_SECONDS=str(args.lease),
        NEWSLETTER_JOURNAL_DIR="" if args.no_journal else str(tmp / "journal"),
    )
    command = [sys.executable, "-m", "newsletter.cli", "worker", "--once", "--poll", "0.5"]
    t0 = time.perf_counter()
    expected_duration = args.subscribers / 1500
    for kill in range(args.kills):
        worker = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        time.sleep(rng.uniform(1.0, max(1.5, expected_duration / (args.kills + 1))))
        if worker.poll() is None:
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            print(f"kill -9 #{kill + 1} at {time.perf_counter() - t0:.1f} s")
    final = subprocess.run(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    if final.returncode != 0:
        print(final.stderr, file=sys.stderr)
    wall = time.perf_counter() - t0

    sink.terminate()
    out, _ = sink.communicate(timeout=60)
    received = Counter(line for line in ids_file.read_text().splitlines() if line)
    with Session(engine) as session:
        counts = ledger.counts(session, edition_id=edition_id)
        status = session.execute(
            text("SELECT status FROM edition WHERE id = :e"), {"e": edition_id}
        ).scalar()
        recorded = {
            row[0]
            for row in session.execute(
                text("SELECT message_id FROM delivery WHERE edition_id = :e AND status = 'sent'"),
                {"e": edition_id},
            )
        }
        unknown = {
            row[0]
            for row in session.execute(
                text(
                    "SELECT message_id FROM delivery WHERE edition_id = :e AND status = 'unknown'"
                ),
                {"e": edition_id},
            )
        }
        ids = {
            row[0]
            for row in session.execute(
                text("SELECT subscriber_id FROM delivery WHERE edition_id = :e"), {"e": edition_id}
            )
        }
    engine.dispose()
    domain = settings.sender().domain
    every = {f"<nl.{edition_id}.{sid}.{instance_tag(SECRET)}@{domain}>" for sid in ids}
    # An unknown delivery is the operator's to judge (`retry-failed --include-unknown`), never
    # silently lost: a sender killed between the journal's hand-over line and the write that
    # carries the dot leaves one the sink never got.
    lost = every - set(received) - unknown
    recorded_not_received = recorded - set(received)
    duplicates = sum(n - 1 for n in received.values() if n > 1)
    print(f"subscribers:       {args.subscribers:,}; kills: {args.kills}; {wall:.1f} s in all")
    totals = ", ".join(f"{k} {v}" for k, v in counts.items() if v)
    print(f"edition status:    {status}; ledger: {totals}")
    print(f"sink received:     {sum(received.values()):,} messages, {len(received):,} distinct")
    print(
        f"lost:              {len(lost)} (never received); {len(recorded_not_received)} recorded "
        "sent but not received"
    )
    print(
        f"unknown:           {len(unknown)} (sender killed after the hand-over line, before "
        f"the 250); {len(unknown & set(received))} of them received by the sink, "
        f"{len(unknown - set(received))} not (an operator re-sends those)"
    )
    print(f"duplicates:        {duplicates} (messages received more than once)")
    if lost or recorded_not_received or status != "sent":
        raise SystemExit("LOSS: some subscriber did not get the edition")


if __name__ == "__main__":
    main()
