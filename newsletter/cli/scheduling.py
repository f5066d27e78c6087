"""Schedule commands, the scheduler process and the all-in-one `run`."""

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo

import typer
from sqlmodel import Session

from newsletter import publish
from newsletter.backends import backend_factory
from newsletter.cli.common import (
    VERBOSE_HELP,
    _print_report,
    _session,
    _settings,
    app,
    base_url_mismatch,
    cli_clock,
    cli_now,
    configure_logging,
    readable_errors,
    schedule_app,
)
from newsletter.clock import system_clock
from newsletter.edition import periods
from newsletter.operations import schedule_files, schedules
from newsletter.publish import senders
from newsletter.service import scheduler
from newsletter.storage import store
from newsletter.storage.database import make_engine, require_head, upgrade
from newsletter.storage.models import (
    Schedule,
)

# --- schedules -----------------------------------------------------------------------------

SCHEDULES_DIR = Path("schedules")


@schedule_app.command("check")
@readable_errors
def schedule_check(
    directory: Annotated[Path, typer.Argument(help="Folder of *.toml files.")] = SCHEDULES_DIR,
) -> None:
    """Validate every schedule file; print each problem (file: field: why) and exit 1."""
    specs = schedule_files.load(directory)
    for spec in specs:
        typer.echo(f"{spec.path.name}: ok ({spec.slug}, {spec.rule.describe()})")


@schedule_app.command("sync")
@readable_errors
def schedule_sync(
    directory: Annotated[Path, typer.Argument(help="Folder of *.toml files.")] = SCHEDULES_DIR,
) -> None:
    """Load the schedule files into the database (all or nothing); pauses are kept."""
    settings = _settings()
    specs = schedule_files.load(directory)
    with _session(settings) as session:
        report = schedules.sync(session, specs, default_site_url=settings.site_url, now=cli_now())
        session.commit()
    for label, slugs in (
        ("created", report.created),
        ("updated", report.updated),
        ("removed", report.removed),
    ):
        if slugs:
            typer.echo(f"{label}: {', '.join(slugs)}")
    for warning in report.warnings:
        typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"{len(specs)} schedule(s) in the database")


@schedule_app.command("list")
@readable_errors
def schedule_list() -> None:
    """Each schedule: next draft and send time (local and UTC), paused, approval, misses."""
    settings = _settings()
    now = cli_now()
    with _session(settings) as session:
        rows = schedules.active_schedules(session)
        if not rows:
            typer.echo("no schedules: write schedules/<slug>.toml, then `newsletter schedule sync`")
        for schedule, newsletter in rows:
            occ = periods.next_times(schedule, newsletter, now)
            zone = occ.rule.zone

            flags = ["PAUSED" if schedule.paused else "active"]
            if schedule.approval_required:
                flags.append("approval required")
            if schedule.local_time:
                flags.append("local-time delivery")
            typer.echo(f"{newsletter.slug}: {occ.rule.describe()} [{', '.join(flags)}]")
            typer.echo(f"  next draft {_local_and_utc(occ.draft_at, zone)}")
            typer.echo(f"  next send  {_local_and_utc(occ.start_at, zone)} for period {occ.key}")
            missed = scheduler.missed(session, schedule, newsletter, now)
            if missed:
                typer.secho(
                    f"  no edition for {missed}: nothing new, or missed while no scheduler ran "
                    "(`run-now` sends the current period only)",
                    fg=typer.colors.YELLOW,
                )


def _local_and_utc(moment: datetime, zone: ZoneInfo) -> str:
    return f"{moment.astimezone(zone):%a %d %b %H:%M %Z} ({moment.astimezone(UTC):%H:%M} UTC)"


def _schedule_of(session: Session, slug: str) -> Schedule:
    schedule = periods.schedule_of(session, store.get_newsletter(session, slug=slug))
    if schedule is None:
        raise store.NotFound(f"newsletter {slug!r} has no schedule: add schedules/{slug}.toml")
    return schedule


@schedule_app.command("pause")
@readable_errors
def schedule_pause(slug: Annotated[str, typer.Argument(metavar="SLUG")]) -> None:
    """Stop drafting and sending on schedule (a send already running is not touched)."""
    _set_paused(slug, True)


@schedule_app.command("resume")
@readable_errors
def schedule_resume(slug: Annotated[str, typer.Argument(metavar="SLUG")]) -> None:
    """Resume the schedule from its next occurrence (or one missed within the grace time)."""
    _set_paused(slug, False)


def _set_paused(slug: str, paused: bool) -> None:
    settings = _settings()
    with _session(settings) as session:
        _schedule_of(session, slug).paused = paused
        session.commit()
    typer.echo(f"{slug}: schedule {'paused' if paused else 'resumed'}")


@schedule_app.command("skip")
@readable_errors
def schedule_skip(
    slug: Annotated[str, typer.Argument(metavar="SLUG")],
    period: Annotated[str, typer.Option(help="ISO week, e.g. 2026-W49.")],
) -> None:
    """Do not draft or send this period's edition (an edition already started is not touched)."""
    settings = _settings()
    with _session(settings) as session:
        when = schedules.skip_period(session, schedule=_schedule_of(session, slug), period=period)
        session.commit()
    typer.echo(f"{slug}: {period} (send {when:%a %d %b %Y %H:%M} UTC) will be skipped")


@schedule_app.command("run-now")
@readable_errors
def schedule_run_now(slug: Annotated[str, typer.Argument(metavar="SLUG")]) -> None:
    """Assemble and send the current period's edition now. Idempotent: run twice, it sends
    (or finishes sending) the one edition; the scheduler later finds it sent.

    The current period is the one whose send time is next (or passed less than 6 h ago): run
    mid-week, it sends next Monday's edition early, with what was published until now, and
    Monday sends nothing (what comes later goes into the following week's edition)."""
    settings = _settings()
    now = cli_now()
    with _session(settings) as session:
        schedule = _schedule_of(session, slug)
        newsletter = store.get_newsletter(session, slug=slug)
        occ = periods.current(schedule, newsletter, now)
        if scheduler.is_skipped(session, occ):
            raise publish.EditionStateError(
                f"{occ.key} is skipped for {slug}; nothing to send (remove the skip first)"
            )
        # The same naming as the scheduler and `edition draft` (newsletter.edition.periods).
        edition = publish.draft_edition(
            session, settings=settings, newsletter_slug=slug, at=now, now=now
        ).edition
        if schedule.local_time:  # each subscriber's own 09:00, as the scheduler would
            local_day = occ.send_at.astimezone(occ.rule.zone).date()
            publish.start_edition(
                session,
                edition_id=edition.id or 0,
                settings=settings,
                local_time=(local_day, occ.rule.at),
                now=now,
            )
        make_backend = backend_factory(settings.mail_backend)
        chosen = make_backend()
        count, processes = senders.layout(None, settings.senders, chosen)
        report = publish.send_edition(
            session,
            edition_id=edition.id or 0,
            settings=settings,
            backend=make_backend,
            options=publish.SendOptions(
                concurrency=count,
                processes=processes,
                wait=not schedule.local_time,
                clock=cli_clock(),
            ),
        )
    _print_report(report, chosen.describe())


@app.command("scheduler")
@readable_errors
def scheduler_command(
    send: Annotated[
        bool, typer.Option(help="Also send what it starts (else leave it to workers).")
    ] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help=VERBOSE_HELP)] = False,
) -> None:
    """Run the weekly schedules (APScheduler): draft at draft time, send at send time.

    Safe to run twice by mistake: the database's unique (newsletter, period) key and
    conditional updates make every step happen once."""
    from newsletter.service.runner import (
        build_scheduler,  # APScheduler: only the scheduler loads it
    )

    configure_logging(verbose=verbose)
    settings = _settings()
    settings.require_sending_ready()
    engine = make_engine(settings.database_url, create=False)
    require_head(engine)
    typer.echo("scheduler running; Ctrl-C stops it", err=True)
    try:
        build_scheduler(settings, engine, send=send, blocking=True).start()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        engine.dispose()


@app.command("run")
@readable_errors
def run_all(
    host: Annotated[str, typer.Option(help="Web app interface.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Web app port.")] = 8000,
    schedules_dir: Annotated[
        Path | None, typer.Option(help="Sync these schedule files first.")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help=VERBOSE_HELP)] = False,
) -> None:
    """Everything for a small deployment in one process: the scheduler, a worker and the web
    app (on SQLite this is the layout to use)."""
    # The web stack and APScheduler, only for this command (see tests/test_footprint.py).
    import uvicorn

    from newsletter.service.runner import build_scheduler, worker_loop
    from newsletter.web.app import create_app

    configure_logging(verbose=verbose)
    settings = _settings()
    settings.require_sending_ready()
    engine = make_engine(settings.database_url)
    upgrade(engine)
    if schedules_dir is not None:
        with Session(engine) as session:
            schedules.sync(
                session,
                schedule_files.load(schedules_dir),
                default_site_url=settings.site_url,
                now=system_clock(),
            )
            session.commit()
    app_ = create_app(settings, engine=engine)
    if warning := base_url_mismatch(settings.base_url, host, port):
        typer.echo(warning, err=True)
    stop = threading.Event()
    aps = build_scheduler(settings, engine, send=False, blocking=False)
    aps.start()
    worker = threading.Thread(
        target=worker_loop, args=(settings, engine), kwargs={"stop": stop}, name="worker"
    )
    worker.start()
    try:
        typer.echo(f"serving {settings.base_url} on http://{host}:{port}", err=True)
        uvicorn.run(
            app_,
            host=host,
            port=port,
            access_log=False,
            log_level="info" if verbose else "warning",
        )
    finally:
        stop.set()
        aps.shutdown(wait=False)
        worker.join(timeout=60)
        engine.dispose()
