"""Where one pass's senders run: threads in this process, or forked sender processes.

A sender spends most of its CPU in Python (personalization, the journal, claims and records),
so threads share one core under the GIL: on a 2-core machine four threaded senders sent no
faster than two. Sender processes each take a core. The pass is forked after the edition is
rendered and the DKIM keys loaded, so every process sends the same bytes without rendering
again, and each runs its share of the senders as threads with its own database connections.

Nothing new is needed for correctness: the ledger's claims already let any number of senders
work side by side (the same holds for ``newsletter worker`` processes), each sender keeps its
own journal, and the rate limit and domain gate are shared through the database. A process
that dies leaves its claims to the lease and its journal to recovery, exactly as a killed
worker does.

Progress crosses the process boundary through shared counters that the parent polls, so the
bar and the log lines move as before; each process's :class:`SendSummary` comes back through a
pipe when it ends.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import pickle
import signal
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any, cast

from sqlalchemy import Engine
from sqlmodel import Session

from newsletter.backends import BackendError, MailBackend
from newsletter.sending.dispatch import SendSummary
from newsletter.sending.progress import SendProgress

#: One sender: dispatch on its own session and backend, reporting to ``progress`` and
#: ``on_batch`` (both may be None).
Sender = Callable[
    [Session, MailBackend, SendProgress | None, Callable[[int], None] | None], SendSummary
]

#: Seconds between the parent's reads of its processes' counters.
POLL = 0.1


class SenderProcessDied(RuntimeError):
    """A sender process ended without reporting (killed, or crashed in C). Its claims come
    back after their lease and its journal is read by the next send, as for a killed worker."""


#: The most senders (connections) a send opens by default, however many cores: a relay or
#: provider may limit concurrent connections; NEWSLETTER_SENDERS or --concurrency go past it.
DEFAULT_MOST = 16
#: Senders per core by default (see :func:`layout`).
PER_CORE = 4


def layout(
    requested: int | None, setting: int, backend: MailBackend, processes: int | None = None
) -> tuple[int, int]:
    """(senders, processes) for one send: ``requested`` senders (a command's
    ``--concurrency``), else ``setting`` (NEWSLETTER_SENDERS), else :data:`PER_CORE` per CPU
    core (at most :data:`DEFAULT_MOST`); spread over ``processes``, else one process per core,
    up to one per sender. A backend whose effects live in this process (the memory outbox)
    keeps every sender in it.

    Measured on a 2-core machine (README, Performance): two processes sent about 1.4 times as
    fast as two threads (personalization, the journal and the ledger are Python under one
    GIL); two senders per process about a tenth faster than one, because each sender waits a
    round trip per message and the others work meanwhile; and four 3-10% faster than two,
    since a message in flight holds no joined copy of its bytes (before that, four per
    process held 123-136 MiB)."""
    cores = os.cpu_count() or 1
    count = requested or setting or min(PER_CORE * cores, DEFAULT_MOST)
    if backend.in_process_only:
        return count, 1
    return count, max(1, min(count, processes or cores))


def in_threads(
    engine: Engine,
    sender: Sender,
    make_backend: Callable[[], MailBackend],
    count: int,
    progress: SendProgress | None,
    on_batch: Callable[[int], None] | None,
) -> SendSummary:
    """Run ``count`` senders in threads of this process, each with its own session and
    backend; re-raises the first failure after every thread has stopped."""
    results: list[SendSummary] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            as_batch_work()
            with Session(engine, expire_on_commit=False) as own:
                results.append(sender(own, make_backend(), progress, on_batch))
        except BaseException as exc:  # re-raised below, after every thread stopped
            errors.append(exc)

    threads = [threading.Thread(target=work, name=f"sender-{i}") for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    total = SendSummary()
    for r in results:
        total.merge(r)
    return total


def as_batch_work() -> None:
    """Mark the calling thread as batch work for the kernel's scheduler (Linux's
    ``SCHED_BATCH``): when it wakes (an answer arrived) it waits for the running thread's
    turn to end instead of preempting it. Elsewhere, or under a policy the operator chose (an
    idle or real-time one), nothing changes. Only the sender threads of :func:`in_threads`
    (which sender processes run too) call it; a send with one sender runs on its caller's
    thread, which keeps its own policy.

    Why: a send is the one bulk job on a machine that also runs what it depends on, often a
    local relay (Postfix on 127.0.0.1), and what people click (the one-click unsubscribe, the
    console). With every thread competing alike, a waking sender preempted the relay it
    waits on, or another sender holding its process's GIL, only to wait again. Measured with
    ``bench/dispatch.py --subscribers 50000 --cli`` (two sender processes and the sink on two
    cores), from the first message to the last: 8,142-8,447 -> 9,007-9,244 messages/s
    (9-11% more), and 122-125 -> 106-109 us of CPU a message (fewer context switches). The
    nice value stays as it was; the kernel only disfavors the thread a little when it wakes
    (sched(7))."""
    batch = getattr(os, "SCHED_BATCH", None)
    if batch is None or not hasattr(os, "sched_setscheduler"):
        return
    try:
        if os.sched_getscheduler(0) == os.SCHED_OTHER:
            os.sched_setscheduler(0, batch, os.sched_param(0))
    except OSError:  # a sandbox may refuse it: the send is the same, only slower
        return


def in_processes(
    engine: Engine,
    sender: Sender,
    make_backend: Callable[[], MailBackend],
    concurrency: int,
    processes: int,
    progress: SendProgress | None,
    on_batch: Callable[[int], None] | None,
) -> SendSummary:
    """Run ``concurrency`` senders spread over ``processes`` forked processes.

    The caller must hold no database connection (commit first): the parent's pooled
    connections are closed before the fork, so no process ever uses a connection another one
    opened (SQLite and libpq both forbid it). Ctrl-C on a terminal reaches the processes with
    the parent; however the parent stops, it waits a moment for them, then interrupts, then
    kills what is left, so it never waits forever (what a killed sender had in flight is in
    its journal, as for any killed sender)."""
    processes = max(1, min(processes, concurrency))
    shares = [concurrency // processes + (k < concurrency % processes) for k in range(processes)]
    engine.dispose()  # closes this process's idle connections: none is carried into a child
    sys.stdout.flush()
    sys.stderr.flush()
    context = multiprocessing.get_context("fork")
    # Three counters per process (answered, problems, claimed), each written by its own
    # process only and read by the parent without a lock: a lock a process held when it was
    # killed would never be released, and the parent would wait on it forever.
    counters = context.RawArray("q", 3 * processes)
    children: list[tuple[Any, Connection]] = []
    me = os.getpid()
    for index, share in enumerate(shares):
        receive, send = context.Pipe(duplex=False)
        child = context.Process(
            target=_child,
            args=(send, engine, sender, make_backend, share, counters, index, me),
            name=f"newsletter-sender-{index}",
        )
        child.start()
        send.close()
        children.append((child, receive))
    relay = _Relay(counters, progress, on_batch)
    outcomes: dict[int, tuple[str, Any]] = {}
    try:
        waiting = {conn: i for i, (_, conn) in enumerate(children)}
        while waiting:
            for ready in wait(list(waiting), timeout=POLL):
                conn = cast(Connection, ready)
                index = waiting.pop(conn)
                try:
                    outcomes[index] = conn.recv()
                except EOFError:
                    process = children[index][0]
                    process.join(timeout=STOP_GRACE)
                    outcomes[index] = (
                        "error",
                        SenderProcessDied(
                            f"sender process {index} ended without reporting (exit code "
                            f"{process.exitcode}); its messages are recorded from its journal "
                            "or sent again after their lease, never twice"
                        ),
                    )
            relay.pass_on()
    finally:
        _stop(children)
        relay.pass_on()
    total = SendSummary()
    for index in range(len(children)):
        kind, value = outcomes[index]
        if kind == "error":
            raise value
        total.merge(value)
    return total


#: Seconds a stopping send gives its processes at each step (ended, SIGINT, SIGKILL).
STOP_GRACE = 5.0


def _stop(children: list[tuple[Any, Connection]]) -> None:
    """Wait for every process; one still running after the grace period (the parent is
    stopping on an error or Ctrl-C) is interrupted, then killed."""
    for step in (None, signal.SIGINT, signal.SIGKILL):
        for process, _ in children:
            if step is not None and process.is_alive() and process.pid is not None:
                os.kill(process.pid, step)
        for process, _ in children:
            process.join(timeout=STOP_GRACE)
        if not any(process.is_alive() for process, _ in children):
            break
    for _, conn in children:
        conn.close()


class _Relay:
    """Passes the processes' counters on to the parent's progress and ``on_batch``."""

    def __init__(
        self,
        counters: Any,
        progress: SendProgress | None,
        on_batch: Callable[[int], None] | None,
    ) -> None:
        self.counters = counters
        self.seen = [0, 0, 0]
        self.progress, self.on_batch = progress, on_batch

    def pass_on(self) -> None:
        values = list(self.counters)
        now = [sum(values[kind::3]) for kind in range(3)]
        done, problems, batches = (now[k] - self.seen[k] for k in range(3))
        self.seen = now
        if self.progress is not None:
            if problems:
                self.progress.add(problems, problem=True)
            if done - problems:
                self.progress.add(done - problems)
        if self.on_batch is not None and batches:
            self.on_batch(batches)


class _SharedProgress(SendProgress):
    """A child's progress: every answer counted in this process's slots of the counters the
    parent reads (a thread lock only: the slots have one writing process)."""

    def __init__(self, counters: Any, index: int) -> None:
        super().__init__()
        self.counters, self.base = counters, 3 * index
        self.guard = threading.Lock()

    def add(self, count: int = 1, *, problem: bool = False) -> None:
        with self.guard:
            self.counters[self.base] += count
            if problem:
                self.counters[self.base + 1] += count

    def claimed(self, count: int) -> None:
        with self.guard:
            self.counters[self.base + 2] += count


def _child(
    report: Connection,
    engine: Engine,
    sender: Sender,
    make_backend: Callable[[], MailBackend],
    threads: int,
    counters: Any,
    index: int,
    parent: int,
) -> None:
    _die_with(parent)
    engine.dispose(close=False)  # a fresh pool: connections are opened in this process
    progress = _SharedProgress(counters, index)
    try:
        summary = in_threads(engine, sender, make_backend, threads, progress, progress.claimed)
        report.send(("ok", summary))
    except BaseException as exc:  # handed to the parent, which raises it
        report.send(("error", _portable(exc)))
    finally:
        report.close()
        engine.dispose()


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives the trip to the parent (pickled *and* unpickled: some error
    classes pickle but cannot be rebuilt), else a RuntimeError carrying its text, so the
    operator sees this error and not a TypeError from unpickling it."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        if isinstance(exc, BackendError):  # keep the kind the CLI explains (paused, resume)
            plain = BackendError(*exc.args, transient=exc.transient, code=exc.code)
            plain.hint = exc.hint
            return plain
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


def _die_with(parent: int) -> None:
    """End this sender when its parent ends, even by SIGKILL (Linux's PR_SET_PDEATHSIG): an
    operator who kills a send stops all of it, and what the sender had in flight is left to
    its journal and the lease, as for any killed sender. Elsewhere a no-op."""
    PR_SET_PDEATHSIG = 1
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent ended before the line above took effect
        os._exit(1)
