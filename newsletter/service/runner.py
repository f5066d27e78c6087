"""The long-running processes: the scheduler (APScheduler 3.11), the worker loop, and
``newsletter run``, which puts both beside the web app in one process for small deployments.

The scheduler's jobs all call :func:`newsletter.service.scheduler.tick`, which is idempotent, so
the jobs only decide *when* to look: one cron job per schedule at its draft time and one at its
send time (exact to the second, with a misfire grace time and coalescing, so a late or missed
run fires once), and a 30-second interval job as the safety net that also picks up schedule
changes and catches up after a restart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from datetime import timedelta

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine
from sqlmodel import Session

from newsletter import publish
from newsletter.backends import BackendError, MailBackend, backend_factory
from newsletter.clock import system_clock
from newsletter.config import Settings
from newsletter.edition import periods
from newsletter.feedback import mailbox
from newsletter.operations.schedules import active_schedules
from newsletter.sending.progress import SendProgress, lines_every
from newsletter.service import bounce_intake, scheduler
from newsletter.storage.database import connection_lost, reset_session

log = logging.getLogger(__name__)

REFRESH_SECONDS = 30
#: How often a running scheduler reads NEWSLETTER_BOUNCE_MAILBOX (listmonk's default is 15 min).
BOUNCE_POLL_SECONDS = 300


def build_scheduler(
    settings: Settings, engine: Engine, *, send: bool, blocking: bool
) -> BaseScheduler:
    """An APScheduler 3.11 scheduler whose jobs run :func:`scheduler.tick`."""
    grace = int(periods.GRACE.total_seconds())
    defaults = {"coalesce": True, "misfire_grace_time": grace, "max_instances": 1}
    aps: BaseScheduler = (
        BlockingScheduler(timezone="UTC", job_defaults=defaults)
        if blocking
        else BackgroundScheduler(timezone="UTC", job_defaults=defaults)
    )
    make_backend: Callable[[], MailBackend] | None = None
    if send:
        url = settings.mail_backend
        make_backend = backend_factory(url)  # the scheme's plugin looked up once
        make_backend()  # a bad URL stops the start, not the first send

    lock = threading.Lock()  # cron and interval jobs may fire together: one tick at a time

    outage = Outage(REFRESH_SECONDS)

    def run_tick() -> None:
        with lock, Session(engine, expire_on_commit=False) as session:
            try:
                for line in scheduler.tick(
                    session,
                    settings,
                    now=system_clock(),
                    clock=system_clock,
                    make_backend=make_backend,
                ):
                    log.info("%s", line)
                _refresh_jobs(aps, session, run_tick)
            except Exception as exc:
                reason = connection_lost(exc)
                reset_session(session)
                if reason is None:
                    raise
                outage.lost(reason)  # told once; the next tick (30 s) tries again
                return
            outage.over()

    aps.add_job(
        run_tick, IntervalTrigger(seconds=REFRESH_SECONDS), id="tick", next_run_time=system_clock()
    )
    if send and settings.bounce_mailbox and settings.bounce_address:
        aps.add_job(
            lambda: poll_bounces(settings, engine),
            IntervalTrigger(seconds=BOUNCE_POLL_SECONDS),
            id="bounces",
            next_run_time=system_clock(),
        )
    return aps


def poll_bounces(settings: Settings, engine: Engine) -> mailbox.PollResult | None:
    """One read of the bounce mailbox; a mailbox or database that fails is logged (the next
    poll tries again; what was not deleted is still there)."""
    try:
        result, intake = bounce_intake.poll_mailbox(settings, engine, clock=system_clock)
    except mailbox.MailboxError as exc:
        log.warning("bounce mailbox: %s", exc)
        return None
    except Exception as exc:
        if connection_lost(exc) is None:
            raise
        log.warning("bounce mailbox not read: the database is unreachable")
        return None
    if result.seen:
        log.info("bounce mailbox: %s", intake.describe())
    for error in result.errors:
        log.warning("bounce mailbox kept a message: %s", error)
    return result


def _refresh_jobs(aps: BaseScheduler, session: Session, run_tick: Callable[[], None]) -> None:
    """One cron job per schedule's draft time and send time; replaced when a schedule changes,
    removed when it goes."""
    wanted: set[str] = set()
    now = system_clock()
    for schedule, newsletter in active_schedules(session):
        occ = periods.next_times(schedule, newsletter, now)
        zone = occ.rule.timezone
        for label, moment in (("draft", occ.draft_at), ("send", occ.start_at)):
            local = moment.astimezone(occ.rule.zone)
            job_id = f"{label}:{newsletter.slug}:{local:%a %H:%M}:{zone}"
            wanted.add(job_id)
            if aps.get_job(job_id) is None:
                trigger = CronTrigger(
                    day_of_week=local.strftime("%a").lower(),
                    hour=local.hour,
                    minute=local.minute,
                    timezone=zone,
                )
                aps.add_job(run_tick, trigger, id=job_id, replace_existing=True)
    for job in aps.get_jobs():
        if job.id != "tick" and job.id not in wanted:
            job.remove()


def worker_loop(
    settings: Settings,
    engine: Engine,
    *,
    stop: threading.Event,
    poll: float = 2.0,
    concurrency: int = 1,
    once: bool = False,
    report: Callable[[publish.SendReport], None] | None = None,
    say: Callable[[str], None] | None = None,
    progress_every: float = 10.0,
) -> None:
    """Send every edition in ``sending`` state until ``stop`` is set (or, with ``once``, until
    nothing is left). Claims make any number of these safe side by side."""
    make_backend = backend_factory(settings.mail_backend)  # the scheme's plugin looked up once
    make_backend()  # a bad URL stops the worker before it claims anything
    outage = Outage(poll)
    with Session(engine, expire_on_commit=False) as session:
        while not stop.is_set():
            try:
                busy = _worker_pass(
                    session, settings, make_backend, concurrency, report, say, progress_every
                )
                if once and not busy and not publish.sending_editions(session):
                    outage.over()
                    return
            except Exception as exc:
                reason = connection_lost(exc)
                reset_session(session)
                if reason is None:
                    raise
                stop.wait(outage.lost(reason))
                continue
            outage.over()
            if not busy:
                stop.wait(poll)


class Outage:
    """Tells a database outage once, when it starts and when it ends, and spaces the retries
    (from ``poll`` doubling to a minute) so a long outage neither spams the log nor hammers
    the server when it comes back."""

    def __init__(self, poll: float) -> None:
        self.poll = poll
        self.delay = 0.0
        self.since: float | None = None

    def lost(self, reason: str) -> float:
        """The seconds to wait before trying again."""
        if self.since is None:
            self.since = time.monotonic()
            log.warning(
                "database connection lost (%s): nothing is lost (sends resume from the ledger "
                "and the journal); retrying until the database is back",
                reason,
            )
        self.delay = min(max(self.poll, self.delay * 2 or self.poll), 60.0)
        return self.delay

    def over(self) -> None:
        if self.since is not None:
            log.warning(
                "database connection is back after %.0f s; carrying on",
                time.monotonic() - self.since,
            )
        self.since, self.delay = None, 0.0


def _worker_pass(
    session: Session,
    settings: Settings,
    make_backend: Callable[[], MailBackend],
    concurrency: int,
    report: Callable[[publish.SendReport], None] | None,
    say: Callable[[str], None] | None = None,
    progress_every: float = 10.0,
) -> bool:
    """One look at every sending edition; True if anything was attempted. A lost database
    connection goes up to the loop, which waits it out; any other failure of one edition is
    logged and the others go on. With ``say``, a long pass tells its progress every
    ``progress_every`` seconds."""
    busy = False
    for edition_id in publish.sending_editions(session):
        progress = SendProgress()
        watch = (
            lines_every(edition_id, progress, every=progress_every, say=say)
            if say is not None
            else nullcontext()
        )
        try:
            with watch:
                result = publish.send_edition(
                    session,
                    edition_id=edition_id,
                    settings=settings,
                    backend=make_backend,
                    options=publish.SendOptions(
                        concurrency=concurrency, clock=system_clock, progress=progress
                    ),
                )
        except publish.EditionStateError:
            continue  # paused or cancelled since it was listed
        except BackendError as exc:  # the edition is paused with the reason
            log.error("edition %s: %s", edition_id, exc)
            continue
        except Exception as exc:
            if connection_lost(exc) is not None:
                raise
            reset_session(session)
            log.exception("edition %s: send pass failed; retrying", edition_id)
            continue
        busy = busy or result.run.attempted > 0
        if result.run.attempted and report is not None:
            report(result)
    return busy


def describe_grace() -> str:
    hours = periods.GRACE / timedelta(hours=1)
    return f"{hours:g} h"
