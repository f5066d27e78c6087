"""Benchmark: one edition (~53 KB) to N subscribers over real SMTP, into a minimal sink.

Starts ``bench/smtp_sink.py`` in its own process on 127.0.0.1, seeds N subscribers in SQLite,
sends with ``--workers`` concurrent senders (threads, each with its own SMTP connection), and
prints messages per second, client CPU microseconds per message (this process: rendering,
personalization, ledger and SMTP client), peak RSS and the sink's count.

    python bench/dispatch.py --subscribers 100000 --workers 8
    python bench/dispatch.py --subscribers 20000 --dkim rsa      # or ed25519, or both
    python bench/dispatch.py --subscribers 20000 --verp --domain-limits '*=1000000'
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lean_client import lean_send
from render_send import bench_settings, peak_rss_mib, seed_edition
from sqlmodel import Session

from newsletter import publish
from newsletter.allocator import keep_freed_memory
from newsletter.backends import backend_from_url
from newsletter.config import Settings
from newsletter.edition.dkim import generate
from newsletter.publish.senders import layout
from newsletter.sending import ledger
from newsletter.storage.database import make_engine, upgrade

HERE = Path(__file__).resolve().parent


def cpu_seconds() -> tuple[float, float]:
    """User and system CPU of this process and of its ended children (the sender processes;
    the sinks are still running, or were already ended before the clock started)."""
    mine = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return mine.ru_utime + children.ru_utime, mine.ru_stime + children.ru_stime


def process_cpu(pid: int) -> float:
    """CPU seconds (user and system) a running process has used so far, from /proc: how the
    sinks' own cost is measured while they still run."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="sender processes the workers are spread over (the CLI's default: one per core)",
    )
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--port", type=int, default=2599)
    parser.add_argument(
        "--no-journal", action="store_true", help="without the write-ahead journal (the before)"
    )
    parser.add_argument(
        "--dkim",
        choices=("none", "rsa", "ed25519", "both"),
        default="none",
        help="sign every message (RSA-2048, Ed25519, or both: dual signing)",
    )
    parser.add_argument("--verp", action="store_true", help="a signed VERP return path per message")
    parser.add_argument(
        "--domain-limits",
        default="",
        help="NEWSLETTER_DOMAIN_LIMITS, e.g. '*=1000000': the per-domain gate's own cost",
    )
    parser.add_argument(
        "--cli",
        action="store_true",
        help="send with the whole `newsletter edition send ID --yes` command and its defaults "
        "(four senders per core, one process per core), in a child process, instead of the API",
    )
    parser.add_argument(
        "--no-ceiling",
        action="store_true",
        help="skip the lean client's run (the ceiling the send is compared with)",
    )
    parser.add_argument(
        "--senders",
        type=int,
        default=None,
        help="with --cli: NEWSLETTER_SENDERS for the command (default: the command's own)",
    )
    parser.add_argument(
        "--strace",
        metavar="FILE",
        default="",
        help="with --cli: run the command under `strace -f -c -o FILE` (Debian's strace), for "
        "its system calls and futex calls a message; slows the send, so its rates don't count",
    )
    args = parser.parse_args()
    if args.strace and not args.cli:
        parser.error("--strace needs --cli")
    keep_freed_memory()

    scratch = tempfile.TemporaryDirectory()  # the sink's times, read after it stops
    times = Path(scratch.name) / "times.txt"
    sink = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "smtp_sink.py"),
            "--port",
            str(args.port),
            "--times",
            str(times),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            settings = bench_settings(
                f"sqlite:///{Path(tmp) / 'bench.db'}",
                batch_size=args.batch_size,
                journal_dir="" if args.no_journal else str(Path(tmp) / "journal"),
                dkim_keys=_dkim_keys(args.dkim, Path(tmp)),
                bounce_address="bounces@news.example.com" if args.verp else "",
                domain_limits=args.domain_limits,
            )
            engine = make_engine(settings.database_url)
            upgrade(engine)
            url = f"smtp://127.0.0.1:{args.port}"
            with Session(engine, expire_on_commit=False) as session:
                edition_id = seed_edition(session, settings, args.subscribers)
                ceiling = None if args.no_ceiling else _ceiling(session, settings, edition_id, args)
                session.commit()
                cpu0, t0, started = cpu_seconds(), time.perf_counter(), time.time()
                sink_cpu0 = process_cpu(sink.pid)
                if args.cli:
                    largest = _send_by_command(
                        settings, url, edition_id, Path(tmp), args.senders, args.strace
                    )
                else:
                    publish.send_edition(
                        session,
                        edition_id=edition_id,
                        settings=settings,
                        backend=lambda: backend_from_url(url),
                        options=publish.SendOptions(
                            concurrency=args.workers, processes=args.processes
                        ),
                    )
                    # The sender processes are waited for; the sinks are not yet.
                    largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
                wall, (user1, system1) = time.perf_counter() - t0, cpu_seconds()
                user, system = user1 - cpu0[0], system1 - cpu0[1]
                cpu = user + system
                sink_cpu = process_cpu(sink.pid) - sink_cpu0
                counts = ledger.counts(session, edition_id=edition_id)
                after = None if args.no_ceiling else _ceiling(session, settings, edition_id, args)
            engine.dispose()
    finally:
        sink.terminate()
        out, _ = sink.communicate(timeout=30)
        stamps = times.read_text().split() if times.exists() else []
        scratch.cleanup()
    received = int(out.strip().splitlines()[-1])
    first, last = (float(stamps[0]), float(stamps[1])) if len(stamps) == 2 else (0.0, 0.0)
    n = counts["sent"]
    how = (
        "the `edition send` command with its defaults"
        if args.cli
        else f"workers {args.workers}, processes {args.processes}"
    )
    print(f"subscribers:           {args.subscribers:,} ({how})")
    print(f"DKIM:                  {args.dkim}")
    print(f"VERP:                  {'yes' if args.verp else 'no'}")
    print(f"domain limits:         {args.domain_limits or 'none'}")
    print(f"sent (ledger):         {counts['sent']:,}; sink received {received:,}")
    print(f"throughput:            {n / wall:,.0f} messages/s ({wall:.1f} s)")
    # The fixed part (interpreter, imports, audience fix, render) apart from the flow. (The
    # ceiling it is compared with below includes the lean client's own few milliseconds of
    # connecting: nothing next to a send's.)
    flow = (n - 1) / (last - first) if first and last > first else float("nan")
    if first:
        print(
            f"first message after:   {first - started:.2f} s; from the first to the last: "
            f"{flow:,.0f} messages/s"
        )
    else:
        print("first message after:   none received")
    print(
        f"client CPU:            {cpu / n * 1e6:,.0f} us per message "
        f"(user {user / n * 1e6:,.0f}, system {system / n * 1e6:,.0f})"
    )
    print(f"peak RSS:              {peak_rss_mib():.0f} MiB (this process)")
    if args.processes > 1 or args.cli:
        print(f"largest child's peak:  {largest:.0f} MiB (the command or a sender process)")
    if ceiling is not None and after is not None:
        # Measured before and after the send: the machine's noise shows as their spread.
        rate = (ceiling[0] + after[0]) / 2
        print(
            f"lean client ceiling:   {ceiling[0]:,.0f} before, {after[0]:,.0f} after: "
            f"{rate:,.0f} messages/s, {(ceiling[1] + after[1]) / 2:,.0f} us CPU per message "
            f"(same bytes, {_connections(args)} connections, same sink program)"
        )
        print(f"send / ceiling:        {n / wall / rate:.2f} (first to last: {flow / rate:.2f})")
        # The send shares the machine's cores with its sink: per message the cores allow at
        # most cores / (client CPU + sink CPU) messages a second, however well the waits
        # overlap. Against the ceiling, that bounds what send / ceiling this CPU cost allows.
        engine_us = (cpu + sink_cpu) / n * 1e6
        lean_sink = (ceiling[2] + after[2]) / 2
        most = (os.cpu_count() or 1) / engine_us * 1e6
        print(
            f"sink CPU:              {sink_cpu / n * 1e6:,.0f} us per message (the send's sink), "
            f"{lean_sink:,.0f} us (the lean client's; one process: at most "
            f"{1e6 / lean_sink:,.0f} messages/s)"
        )
        print(
            f"client + sink CPU:     {engine_us:,.0f} us per message: {os.cpu_count()} cores "
            f"allow the send at most {most:,.0f} messages/s, {most / rate:.2f} of the ceiling"
        )
    if received != counts["sent"]:
        raise SystemExit("sink count and ledger disagree")


def _ceiling(
    session: Session, settings: Settings, edition_id: int, args: argparse.Namespace
) -> tuple[float, float, float]:
    """The lean client's rate, its CPU per message and its sink's CPU per message (us) for
    this edition's real message bytes, into a fresh sink of its own (so the engine's sink
    counts only the engine's messages)."""
    from newsletter.edition.personalization import Recipient
    from newsletter.publish.drafting import prepare, signer_for
    from newsletter.storage.store import get_edition

    _, template, _ = prepare(
        session, edition=get_edition(session, edition_id=edition_id), settings=settings
    )
    message = template.build(
        Recipient(1, "reader1@example.com", "Reader 1"), signer_for(settings), now=time.time()
    ).data
    sink = subprocess.Popen(
        [sys.executable, str(HERE / "smtp_sink.py"), "--port", str(args.port + 1)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
    try:
        sink_cpu0 = process_cpu(sink.pid)
        wall, cpu = lean_send(
            "127.0.0.1", args.port + 1, message, args.subscribers, _connections(args)
        )
        sink_cpu = process_cpu(sink.pid) - sink_cpu0
    finally:
        sink.terminate()
        sink.communicate(timeout=30)
    n = args.subscribers
    return n / wall, cpu / n * 1e6, sink_cpu / n * 1e6


def _connections(args: argparse.Namespace) -> int:
    """The engine's connection count: its workers, or the command's default (the layout the
    command itself picks with no flags and no NEWSLETTER_SENDERS)."""
    if not args.cli:
        return int(args.workers)
    default, _ = layout(None, 0, backend_from_url(f"smtp://127.0.0.1:{args.port}"))
    return default


def _send_by_command(
    settings: Settings,
    url: str,
    edition_id: int,
    folder: Path,
    senders: int | None = None,
    strace: str = "",
) -> float:
    """``newsletter edition send ID --yes`` in a child process, configured only by the
    environment, as an operator runs it (run from ``folder``: no stray .env is read).

    Returns the peak RSS in MiB of its largest process (the command or one of its sender
    processes), from ``wait4`` in a small launcher process (:data:`LAUNCHER`): Linux carries
    a process's peak across ``exec``, so a command forked from this process, which holds the
    seeded audience, would report this process's peak as its own (it did: 93-94 MiB at a
    million, against the command's own 82)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    for name in (
        "database_url",
        "secret_key",
        "base_url",
        "batch_size",
        "journal_dir",
        "dkim_keys",
        "bounce_address",
        "domain_limits",
    ):
        env[f"NEWSLETTER_{name.upper()}"] = str(getattr(settings, name))
    env["NEWSLETTER_MAIL_BACKEND"] = url
    if senders:
        env["NEWSLETTER_SENDERS"] = str(senders)
    peak = folder / "peak.txt"
    args = [sys.executable, "-m", "newsletter.cli", "edition", "send", str(edition_id), "--yes"]
    traced = ["strace", "-f", "-c", "-o", str(Path(strace).resolve())] if strace else []
    subprocess.run(
        [*traced, sys.executable, "-c", LAUNCHER, str(peak), *args],
        env=env,
        cwd=folder,
        stdout=subprocess.DEVNULL,
        check=True,
    )
    return int(peak.read_text()) / 1024


#: Runs argv[2:] as a child and writes its peak RSS (KiB, the largest of it and the children
#: it waited for) to argv[1]; exits with the child's code. Small (an interpreter and nothing
#: imported), so the peak a child inherits from it across exec is far below the command's.
LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
open(sys.argv[1], "w").write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def _dkim_keys(kind: str, folder: Path) -> str:
    """Fresh keys of ``kind`` on disk, as NEWSLETTER_DKIM_KEYS ("" for none)."""
    kinds = {"none": (), "rsa": ("rsa",), "ed25519": ("ed25519",), "both": ("rsa", "ed25519")}
    entries = []
    for name in kinds[kind]:
        pem, _ = generate(name)
        path = folder / f"{name}.pem"
        path.write_bytes(pem)
        entries.append(f"s-{name}:{path}")
    return ",".join(entries)


if __name__ == "__main__":
    main()
