"""Benchmark: `import subscribers` of an N-row CSV, on SQLite or PostgreSQL.

Writes a CSV of N distinct addresses (names on every other row), imports it the way the
command does (parse, validate every line, write, commit, refresh statistics) into a fresh
database, and prints the time for the parse and for the whole, per row, and the peak RSS.
A second import of the same file (everyone known already) is timed too, and an export of the
list (``subscribers export``) to /dev/null.

    python bench/import_list.py --rows 1000000                 # SQLite
    python bench/import_list.py --rows 1000000 --postgres      # a scratch database
    python bench/import_list.py --rows 1000000 --cli           # the command itself

With ``--cli`` the import is the whole ``newsletter import subscribers`` command in a child
process (after ``newsletter db upgrade``): its wall time and its peak RSS are printed.
"""

from __future__ import annotations

import argparse
import inspect
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from render_send import SECRET, bench_settings, peak_rss_mib
from scratch import scratch_postgres
from sqlmodel import Session

from newsletter import publish
from newsletter.audience import importing
from newsletter.audience.exporting import export_subscribers
from newsletter.storage.database import make_engine, upgrade
from newsletter.storage.planner import refresh_statistics

#: Whether this version's parse can size its table of addresses seen up front (as the command
#: does), so the same script measures the version before it too.
#: The time the imports write on their rows.
IMPORTED_AT = datetime(2026, 11, 25, 9, tzinfo=UTC)

SIZED = "expected_lines" in inspect.signature(importing.iter_subscribers).parameters


def write_csv(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8") as out:
        out.write("email,name\n")
        for i in range(rows):
            out.write(
                f"reader{i}@mail{i % 997}.example.org,{'Reader ' + str(i) if i % 2 else ''}\n"
            )


def run(url: str, csv: Path, rows: int) -> None:
    engine = make_engine(url)
    upgrade(engine)
    settings = bench_settings(url)
    try:
        with Session(engine, expire_on_commit=False) as session:
            publish.default_newsletter(session, settings)
            session.commit()
            for label in ("new list", "again (all known)"):
                t0 = time.perf_counter()
                report = importing.import_subscribers(
                    session, now=IMPORTED_AT, path=csv, default_newsletter=settings.newsletter
                )
                session.commit()
                refresh_statistics(session, ("subscriber", "subscription"))
                took = time.perf_counter() - t0
                print(
                    f"{label:18} {took:6.1f} s  {took / rows * 1e6:5.0f} us/row  "
                    f"created {report.created:,}, subscribed {report.subscribed:,}, "
                    f"rejected {len(report.rejected)}"
                )
            t0 = time.perf_counter()
            with open(os.devnull, "w", encoding="utf-8") as sink:
                exported = export_subscribers(session, sink)
            took = time.perf_counter() - t0
            print(
                f"{'export':18} {took:6.1f} s  {took / rows * 1e6:5.0f} us/row  {exported:,} rows"
            )
    finally:
        engine.dispose()


def run_cli(url: str, csv: Path) -> None:
    """``newsletter import subscribers CSV`` as an operator runs it, in a child process."""
    command = Path(sys.executable).with_name("newsletter")
    env = {
        **os.environ,
        "NEWSLETTER_DATABASE_URL": url,
        "NEWSLETTER_SECRET_KEY": SECRET,
    }
    subprocess.run([command, "db", "upgrade"], env=env, check=True, capture_output=True)
    t0 = time.perf_counter()
    done = subprocess.run(
        [command, "import", "subscribers", str(csv)], env=env, capture_output=True, text=True
    )
    took = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"the command failed: {done.stderr.strip() or done.stdout.strip()}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(done.stdout.strip())
    print(f"the command:       {took:.1f} s, peak RSS {peak:.0f} MiB (largest child)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--cli", action="store_true", help="time the command, not the API")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "list.csv"
        write_csv(csv, args.rows)
        t0 = time.perf_counter()
        with csv.open(encoding="utf-8", newline="") as stream:  # as the import reads it
            parsed = sum(
                1
                for item in importing.iter_subscribers(
                    stream,
                    known_newsletters={"weekly-ai-tool-verdicts"},
                    default_newsletter="weekly-ai-tool-verdicts",
                    **({"expected_lines": args.rows} if SIZED else {}),
                )
                if not isinstance(item, str)
            )
        print(f"rows:              {args.rows:,} ({'PostgreSQL' if args.postgres else 'SQLite'})")
        print(f"parse + validate:  {time.perf_counter() - t0:.1f} s for {parsed:,} rows")
        print(f"peak RSS so far:   {peak_rss_mib():.0f} MiB (the parse alone)")
        measure = (lambda url, csv, _rows: run_cli(url, csv)) if args.cli else run
        if not args.postgres:
            measure(f"sqlite:///{Path(tmp) / 'import.db'}", csv, args.rows)
        else:
            with scratch_postgres("bench_import") as url:
                measure(url, csv, args.rows)
    print(f"peak RSS:          {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
