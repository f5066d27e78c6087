"""The ``newsletter`` command: thin Typer commands over ``publish`` and the importers.

Every command reads settings from the environment (``NEWSLETTER_*``, or a ``.env`` file), prints
a readable error and exits 1 when something is wrong, and never prints a secret.
"""

from __future__ import annotations

import logging
import re
import secrets
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar
from zoneinfo import ZoneInfo

import typer
from pydantic import ValidationError
from sqlalchemy import Engine
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlmodel import Session, col, select

from newsletter import importing, ledger, publish, store, subscriptions
from newsletter.allocator import keep_freed_memory
from newsletter.backends import BackendError, backend_from_url
from newsletter.backends.file import FileBackend
from newsletter.config import ConfigError, Settings
from newsletter.content import SLUG_PATTERN
from newsletter.database import SchemaOutOfDate, make_engine, require_head, session_scope, upgrade
from newsletter.importing import comparisons_json_schema
from newsletter.models import (
    Comparison,
    Edition,
    EditionStatus,
    Newsletter,
    Schedule,
    ScheduleSkip,
    Subscriber,
    SubscriptionEvent,
    utcnow,
)
from newsletter.paths import example_comparisons, example_subscribers
from newsletter.rendering import GMAIL_CLIP_BYTES, RenderError
from newsletter.schedules import ScheduleFileError
from newsletter.timing import RuleError

app = typer.Typer(
    help="Weekly AI Tool Verdicts: import comparisons and subscribers, draft, preview and send "
    "editions. Settings come from NEWSLETTER_* environment variables (see the README).",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema migrations.", no_args_is_help=True)
import_app = typer.Typer(
    help="Import comparisons (JSON) and subscribers (CSV).", no_args_is_help=True
)
edition_app = typer.Typer(help="Draft, preview and send editions.", no_args_is_help=True)
newsletters_app = typer.Typer(help="List and add newsletters.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(import_app, name="import")
app.add_typer(edition_app, name="edition")
app.add_typer(newsletters_app, name="newsletters")
subscribers_app = typer.Typer(help="Look up and remove subscribers.", no_args_is_help=True)
app.add_typer(subscribers_app, name="subscribers")
schedule_app = typer.Typer(
    help="Weekly schedules: check, sync, list, pause, skip.", no_args_is_help=True
)
app.add_typer(schedule_app, name="schedule")

F = TypeVar("F", bound=Callable[..., Any])
_EXPECTED_ERRORS = (
    ConfigError,
    BackendError,
    SchemaOutOfDate,
    store.NotFound,
    publish.EmptyWeek,
    publish.EditionStateError,
    RenderError,
    RuleError,
    FileNotFoundError,
    IsADirectoryError,
    PermissionError,
)


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(1)


def readable_errors(func: F) -> F:
    """Turn the errors a user can fix into one red line and exit code 1 (no traceback)."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ScheduleFileError as exc:
            for problem in exc.problems:
                typer.echo(problem, err=True)
            raise _fail(f"{len(exc.problems)} problem(s) in the schedule files") from None
        except importing.ImportRejected as exc:
            for problem in exc.problems:
                typer.echo(problem, err=True)
            raise _fail(f"{len(exc.problems)} problem(s); nothing was imported") from None
        except ValidationError as exc:
            raise _fail(f"configuration: {exc}") from None
        except _EXPECTED_ERRORS as exc:
            raise _fail(str(exc)) from None
        except OperationalError as exc:
            # The driver's own first line (no URL, so no password), e.g. connection refused.
            first = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
            raise _fail(f"database: {first}") from None
        except ArgumentError:
            raise _fail("NEWSLETTER_DATABASE_URL is not a valid SQLAlchemy URL") from None

    return wrapper  # type: ignore[return-value]


def _settings(**overrides: Any) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


@contextmanager
def _session(settings: Settings, *, migrate: bool = False) -> Iterator[Session]:
    engine = make_engine(settings.database_url)
    try:
        if migrate:
            upgrade(engine)
        else:
            require_head(engine)
        with session_scope(engine) as session:
            yield session
    finally:
        engine.dispose()


# --- db ------------------------------------------------------------------------------------


@db_app.command("upgrade")
@readable_errors
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Bring the database (SQLite or PostgreSQL) to the latest schema. Safe to run again."""
    settings = _settings()
    engine = make_engine(settings.database_url)
    try:
        upgrade(engine, revision)
    finally:
        engine.dispose()
    typer.echo(f"database {engine.url.render_as_string(hide_password=True)} is at {revision}")


# --- import --------------------------------------------------------------------------------


@import_app.command("comparisons")
@readable_errors
def import_comparisons(
    file: Annotated[
        Path, typer.Argument(help="A JSON file (see schemas/comparisons.schema.json).")
    ],
) -> None:
    """Validate every record, then upsert by slug. One bad record and nothing is written."""
    settings = _settings()
    with _session(settings) as session:
        report = importing.import_comparisons(session, path=file)
        session.commit()
    typer.echo(
        f"comparisons: {report.created} created, {report.updated} updated, "
        f"{report.unchanged} unchanged"
    )


@import_app.command("schema")
def import_schema() -> None:
    """Print the JSON Schema of comparison files (schemas/comparisons.schema.json is this)."""
    sys.stdout.write(comparisons_json_schema())


@import_app.command("subscribers")
@readable_errors
def import_subscribers(
    file: Annotated[Path, typer.Argument(help="A CSV file (see subscribers/README.md).")],
    strict: Annotated[bool, typer.Option(help="Import nothing if any line is rejected.")] = False,
) -> None:
    """Import subscribers; each rejected line is reported with its number and reason."""
    settings = _settings()
    with _session(settings) as session:
        publish.default_newsletter(session, settings)
        report = importing.import_subscribers(
            session, path=file, default_newsletter=settings.newsletter, strict=strict
        )
        session.commit()
    for problem in report.rejected:
        typer.echo(problem, err=True)
    typer.echo(_subscriber_summary(report))


def _subscriber_summary(report: importing.SubscriberImportReport) -> str:
    return (
        f"subscribers: {report.created} new, {report.updated} updated, "
        f"{report.subscribed} subscriptions added, {report.kept_unsubscribed} kept unsubscribed, "
        f"{report.suppressed} suppressed left alone, {len(report.rejected)} line(s) rejected"
    )


# --- newsletters ---------------------------------------------------------------------------


@newsletters_app.command("list")
@readable_errors
def newsletters_list() -> None:
    """Every newsletter with its time zone, cap and active subscribers."""
    settings = _settings()
    with _session(settings) as session:
        publish.default_newsletter(session, settings)
        session.commit()
        for n in session.exec(select(Newsletter).order_by(col(Newsletter.slug))):
            active = store.count_active_subscribers(session, newsletter_id=n.id or 0)
            typer.echo(f"{n.slug}\t{n.name}\t{n.timezone}\tcap {n.item_cap}\t{active} active")


def _subscriber(session: Session, email: str) -> Subscriber:
    found = store.subscribers_by_key(session, keys=[email.strip().lower()])
    if not found:
        raise store.NotFound(f"no subscriber with address {email!r}")
    return next(iter(found.values()))


@subscribers_app.command("show")
@readable_errors
def subscribers_show(email: Annotated[str, typer.Argument(help="The address.")]) -> None:
    """A subscriber's lists, suppression, and the history of changes (newest last)."""
    settings = _settings()
    with _session(settings) as session:
        person = _subscriber(session, email)
        assert person.id is not None
        typer.echo(f"{person.email}\t{person.name or ''}\tsuppressed: {person.suppressed or 'no'}")
        for n, status in subscriptions.newsletters_of(session, subscriber_id=person.id):
            typer.echo(f"  {n.slug}\t{status}")
        for e in session.exec(
            select(SubscriptionEvent)
            .where(SubscriptionEvent.subscriber_id == person.id)
            .order_by(col(SubscriptionEvent.id))
        ):
            edition = f"\tedition {e.edition_id}" if e.edition_id else ""
            typer.echo(f"  {e.created_at:%Y-%m-%d %H:%M}Z\t{e.kind}\t{e.source}{edition}")


@subscribers_app.command("remove")
@readable_errors
def subscribers_remove(
    email: Annotated[str, typer.Argument(help="The address.")],
    newsletter: Annotated[
        str | None, typer.Option(help="Only this newsletter (default: the default one).")
    ] = None,
    everything: Annotated[
        bool, typer.Option("--all", help="Every newsletter, and suppress the address.")
    ] = False,
) -> None:
    """Unsubscribe an address as an operator (recorded with source "operator"); a running
    send skips it from its next batch."""
    settings = _settings()
    with _session(settings) as session:
        person = _subscriber(session, email)
        target = publish.resolve_newsletter(session, settings, newsletter)
        assert person.id is not None and target.id is not None
        changed = subscriptions.unsubscribe(
            session,
            subscriber_id=person.id,
            newsletter_id=target.id,
            edition_id=None,
            source="operator",
            everything=everything,
        )
        session.commit()
    where = "every newsletter (suppressed)" if everything else target.slug
    typer.echo(f"{person.email}: {'removed from' if changed else 'already off'} {where}")


@newsletters_app.command("add")
@readable_errors
def newsletters_add(
    slug: str,
    name: Annotated[str, typer.Option(help="Display name, used in the From and List-Id.")],
    timezone: Annotated[str, typer.Option(help="IANA time zone of the weekly period.")] = "UTC",
    cap: Annotated[int, typer.Option(min=1, max=50, help="Most comparisons per edition.")] = 8,
    site_url: Annotated[str | None, typer.Option(help="Where 'N more' links.")] = None,
) -> None:
    """Add a newsletter (subscribers name it in the CSV 'newsletters' column)."""
    if not re.fullmatch(SLUG_PATTERN, slug):
        raise _fail(f"SLUG {slug!r}: expected lower-case words joined by hyphens")
    if not name.strip() or any(ord(c) < 32 for c in name):
        raise _fail("--name: must be a single line of text")
    # The same validation as the settings: an http(s) URL, a valid IANA zone.
    settings = _settings()
    checked = _settings(timezone=timezone, site_url=site_url or settings.site_url)
    with _session(settings) as session:
        if session.exec(select(Newsletter).where(Newsletter.slug == slug)).first():
            raise _fail(f"newsletter {slug!r} already exists; nothing changed")
        n = store.ensure_newsletter(
            session,
            slug=slug,
            name=name.strip(),
            timezone=checked.timezone,
            site_url=checked.site_url,
            item_cap=cap,
        )
        session.commit()
        typer.echo(f"newsletter {n.slug} ({n.name}, {n.timezone})")


# --- edition -------------------------------------------------------------------------------


def _parse_at(value: str | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise _fail(f"--at: {value!r} is not an ISO 8601 date or time") from None


@edition_app.command("draft")
@readable_errors
def edition_draft(
    newsletter: Annotated[
        str | None, typer.Option(help="Newsletter slug (default: NEWSLETTER_NEWSLETTER).")
    ] = None,
    at: Annotated[
        str | None,
        typer.Option(
            help="An instant in the period, ISO 8601 (default now; no offset = the "
            "newsletter's time zone)."
        ),
    ] = None,
) -> None:
    """Create (or refresh) the draft edition for the week containing --at; prints its id."""
    settings = _settings()
    with _session(settings) as session:
        outcome = publish.draft_edition(
            session, settings=settings, newsletter_slug=newsletter, at=_parse_at(at)
        )
    e = outcome.edition
    verb = "created" if outcome.created else f"existing ({e.status})"
    typer.echo(
        f"edition {e.id} {verb}: {outcome.period.describe()}, "
        f"{len(outcome.selection.items)} comparison(s), {e.more_count} more",
        err=True,
    )
    typer.echo(str(e.id))


class PreviewFormat(StrEnum):
    html = "html"
    text = "text"


@edition_app.command("preview")
@readable_errors
def edition_preview(
    edition_id: Annotated[int, typer.Argument(metavar="ID")],
    format: Annotated[PreviewFormat, typer.Option("--format", help="html or text.")] = (
        PreviewFormat.html
    ),
    out: Annotated[Path | None, typer.Option(help="Write here instead of stdout.")] = None,
) -> None:
    """Write what a subscriber would see, rendered for a sample recipient."""
    settings = _settings()
    with _session(settings) as session:
        page, text, rendered = publish.preview_edition(
            session, edition_id=edition_id, settings=settings
        )
    content = page if format == PreviewFormat.html else text
    if rendered.html_bytes > GMAIL_CLIP_BYTES:
        typer.secho(
            f"warning: HTML is {rendered.html_bytes} bytes; Gmail clips over {GMAIL_CLIP_BYTES}",
            fg=typer.colors.YELLOW,
            err=True,
        )
    if out is None:
        sys.stdout.write(content)
    else:
        out.write_text(content, encoding="utf-8")
        typer.echo(f"wrote {out}", err=True)


@edition_app.command("send")
@readable_errors
def edition_send(
    edition_id: Annotated[int, typer.Argument(metavar="ID")],
    backend: Annotated[
        str | None,
        typer.Option(
            help="Mail backend URL (default: NEWSLETTER_MAIL_BACKEND).", show_default=False
        ),
    ] = None,
    concurrency: Annotated[
        int, typer.Option(min=1, max=64, help="Senders in parallel, each with its own connection.")
    ] = 1,
    wait: Annotated[
        bool, typer.Option(help="Keep going until done, waiting for deferred retries.")
    ] = False,
) -> None:
    """Send to every active subscriber, once each; running it again sends only what is left."""
    settings = _settings()
    url = backend or settings.mail_backend
    backend_from_url(url)  # a bad URL is an error before anything starts
    with _session(settings) as session:
        report = _send_with_progress(
            session, settings, edition_id, lambda: backend_from_url(url), concurrency, wait
        )
    _print_report(report, backend_from_url(url).describe())
    if report.run.failed or report.run.deferred or report.run.unknown:
        raise typer.Exit(1)
    if report.edition.status != "sent":
        typer.echo(
            f"edition {report.edition.id} is not finished (status {report.edition.status})"
            + (
                f"; next retry at {report.next_retry_at:%Y-%m-%d %H:%M:%S} UTC"
                if report.next_retry_at
                else ""
            ),
            err=True,
        )
        raise typer.Exit(1)


def _send_with_progress(
    session: Session,
    settings: Settings,
    edition_id: int,
    make_backend: Callable[[], Any],
    concurrency: int,
    wait: bool,
) -> publish.SendReport:
    options: dict[str, Any] = {
        "edition_id": edition_id,
        "settings": settings,
        "make_backend": make_backend,
        "concurrency": concurrency,
        "wait": wait,
    }
    if not sys.stderr.isatty():
        return publish.send_edition(session, **options)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=True,
    ) as progress:
        task = progress.add_task(f"sending edition {edition_id}", total=None)
        return publish.send_edition(
            session,
            on_start=lambda total: progress.update(task, total=total),
            on_batch=lambda n: progress.advance(task, n),
            **options,
        )


def _print_report(report: publish.SendReport, backend: str) -> None:
    run, totals = report.run, report.totals
    e = report.edition
    if run.attempted == 0 and e.status == "sent":
        typer.echo(f"edition {e.id} was already sent; nothing sent again")
    typer.echo(
        f"edition {e.id} via {backend}: sent {run.sent}, failed {run.failed}, "
        f"deferred {run.deferred}, unknown {run.unknown}, skipped {run.skipped} (this run)"
    )
    typer.echo(
        "totals: " + ", ".join(f"{k} {v}" for k, v in totals.items() if v) + f"; status {e.status}"
    )
    if run.stopped_because:
        typer.echo(f"stopped: {run.stopped_because}", err=True)
    for error in run.errors:
        typer.echo(f"  {error}", err=True)
    if run.deferred:
        typer.echo("deferred deliveries are retried by running `edition send` again", err=True)
    if run.unknown:
        typer.echo(
            "unknown: the server may have the message (connection lost during DATA); "
            "not retried automatically, to avoid mailing anyone twice",
            err=True,
        )


@edition_app.command("start")
@readable_errors
def edition_start(edition_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Fix the audience and hand the edition to workers (`newsletter worker`) to send."""
    settings = _settings()
    with _session(settings) as session:
        added = publish.start_edition(session, edition_id=edition_id, settings=settings)
        status = store.edition_status(session, edition_id=edition_id)
    typer.echo(f"edition {edition_id} is {status}; {added} deliveries queued")


@edition_app.command("approve")
@readable_errors
def edition_approve(
    edition_id: Annotated[int, typer.Argument(metavar="ID")],
    by: Annotated[str, typer.Option(help="Who approves (recorded).")] = "an editor",
) -> None:
    """Approve a draft whose schedule requires it; the scheduler sends it at its next look."""
    settings = _settings()
    with _session(settings) as session:
        edition = publish.approve_edition(session, edition_id=edition_id, by=by)
    typer.echo(f"edition {edition_id} ({edition.period_key}) approved by {by}")


@edition_app.command("pause")
@readable_errors
def edition_pause(
    edition_id: Annotated[int, typer.Argument(metavar="ID")],
    reason: Annotated[str, typer.Option(help="Shown in `status`.")] = "paused by an operator",
) -> None:
    """Stop sending; takes effect before the next batch of every running send."""
    settings = _settings()
    with _session(settings) as session:
        publish.pause_edition(session, edition_id=edition_id, reason=reason)
    typer.echo(f"edition {edition_id} paused")


@edition_app.command("resume")
@readable_errors
def edition_resume(edition_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Allow a paused edition to send again (run `send` or let workers pick it up)."""
    settings = _settings()
    with _session(settings) as session:
        publish.resume_edition(session, edition_id=edition_id)
    typer.echo(f"edition {edition_id} resumed; nothing already sent is sent again")


@edition_app.command("cancel")
@readable_errors
def edition_cancel(edition_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Send nothing more; what was sent stays recorded."""
    settings = _settings()
    with _session(settings) as session:
        publish.cancel_edition(session, edition_id=edition_id)
    typer.echo(f"edition {edition_id} cancelled")


@edition_app.command("retry-failed")
@readable_errors
def edition_retry_failed(
    edition_id: Annotated[int, typer.Argument(metavar="ID")],
    code: Annotated[int | None, typer.Option(help="Only failures with this reply code.")] = None,
    include_unknown: Annotated[
        bool, typer.Option(help="Also retry 'unknown' ones (they may already be delivered).")
    ] = False,
) -> None:
    """Re-queue failed deliveries; then run `send` (or workers) again."""
    settings = _settings()
    with _session(settings) as session:
        count = publish.retry_failed(
            session, edition_id=edition_id, include_unknown=include_unknown, code=code
        )
    typer.echo(f"edition {edition_id}: {count} deliveries re-queued")


@edition_app.command("status")
@readable_errors
def edition_status(edition_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Counts by state, send rate, ETA and the latest errors."""
    settings = _settings()
    with _session(settings) as session:
        edition = store.get_edition(session, edition_id=edition_id)
        p = ledger.progress(session, edition_id=edition_id)
        due = ledger.next_retry_at(session, edition_id=edition_id)
    c = p.counts
    left = c["pending"] + c["deferred"] + c["claimed"]
    typer.echo(f"edition {edition_id} ({edition.period_key}): {edition.status}")
    if edition.status_reason:
        typer.echo(f"  reason: {edition.status_reason}")
    typer.echo("  " + ", ".join(f"{k} {v}" for k, v in c.items()))
    rate = p.sent_last_minute / 60
    eta = f"{left / rate / 60:.1f} min" if rate and left else "-"
    typer.echo(f"  rate: {rate:.1f}/s over the last minute; left: {left}; ETA: {eta}")
    if due:
        typer.echo(f"  next retry: {due:%Y-%m-%d %H:%M:%S} UTC")
    for email, code, text in p.recent_errors:
        typer.echo(f"  error: {email}: {code or ''} {text}")


@edition_app.command("list")
@readable_errors
def edition_list() -> None:
    """Every edition: id, newsletter, period, status, subject, delivery counts."""
    settings = _settings()
    with _session(settings) as session:
        rows = session.exec(select(Edition).order_by(col(Edition.id))).all()
        for e in rows:
            c = ledger.counts(session, edition_id=e.id or 0)
            typer.echo(
                f"{e.id}\t{e.period_key}\t{e.status}\tsent {c['sent'] + c['queued']}"
                f"\tfailed {c['failed']}\t{e.subject}"
            )


# --- worker --------------------------------------------------------------------------------


@app.command("worker")
@readable_errors
def worker(
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Senders in this process.")] = 1,
    once: Annotated[bool, typer.Option(help="Exit when no edition has work left.")] = False,
    poll: Annotated[float, typer.Option(min=0.1, help="Seconds between looks for work.")] = 2.0,
) -> None:
    """Send every edition in `sending` state, claiming batches from the database.

    Run several on PostgreSQL (any number of machines); on SQLite one is enough.
    """
    from newsletter.runner import worker_loop

    settings = _settings()
    describe = backend_from_url(settings.mail_backend).describe()
    with _session(settings) as session:
        if session.get_bind().dialect.name == "sqlite":
            typer.echo(
                "note: SQLite serializes writers; one worker process is enough "
                "(use --concurrency for parallel connections, PostgreSQL for several workers)",
                err=True,
            )
        engine = session.get_bind()
        assert isinstance(engine, Engine)
        worker_loop(
            settings,
            engine,
            stop=threading.Event(),
            poll=poll,
            concurrency=concurrency,
            once=once,
            report=lambda r: _print_report(r, describe),
        )


# --- schedules -----------------------------------------------------------------------------

SCHEDULES_DIR = Path("schedules")


@schedule_app.command("check")
@readable_errors
def schedule_check(
    directory: Annotated[Path, typer.Argument(help="Folder of *.toml files.")] = SCHEDULES_DIR,
) -> None:
    """Validate every schedule file; print each problem (file: field: why) and exit 1."""
    from newsletter import schedules

    specs = schedules.load(directory)
    for spec in specs:
        typer.echo(f"{spec.path.name}: ok ({spec.slug}, {spec.rule.describe()})")


@schedule_app.command("sync")
@readable_errors
def schedule_sync(
    directory: Annotated[Path, typer.Argument(help="Folder of *.toml files.")] = SCHEDULES_DIR,
) -> None:
    """Load the schedule files into the database (all or nothing); pauses are kept."""
    from newsletter import schedules

    settings = _settings()
    specs = schedules.load(directory)
    with _session(settings) as session:
        report = schedules.sync(session, specs, default_site_url=settings.site_url)
        session.commit()
    for label, slugs in (
        ("created", report.created),
        ("updated", report.updated),
        ("removed", report.removed),
    ):
        if slugs:
            typer.echo(f"{label}: {', '.join(slugs)}")
    typer.echo(f"{len(specs)} schedule(s) in the database")


@schedule_app.command("list")
@readable_errors
def schedule_list() -> None:
    """Each schedule: next draft and send time (local and UTC), paused, approval, misses."""
    from newsletter import scheduler, schedules

    settings = _settings()
    now = utcnow()
    with _session(settings) as session:
        rows = schedules.active_schedules(session)
        if not rows:
            typer.echo("no schedules: write schedules/<slug>.toml, then `newsletter schedule sync`")
        for schedule, newsletter in rows:
            occ = scheduler.next_times(schedule, newsletter, now)
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
    newsletter = store.get_newsletter(session, slug=slug)
    schedule = session.exec(select(Schedule).where(Schedule.newsletter_id == newsletter.id)).first()
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
    from newsletter.schedules import rule_of

    settings = _settings()
    with _session(settings) as session:
        schedule = _schedule_of(session, slug)
        when = rule_of(schedule).occurrence_for(period)
        exists = session.exec(
            select(ScheduleSkip).where(
                ScheduleSkip.newsletter_id == schedule.newsletter_id,
                ScheduleSkip.period_key == period,
            )
        ).first()
        if exists is None:
            session.add(ScheduleSkip(newsletter_id=schedule.newsletter_id, period_key=period))
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
    from newsletter import scheduler as sched

    settings = _settings()
    now = utcnow()
    with _session(settings) as session:
        schedule = _schedule_of(session, slug)
        newsletter = store.get_newsletter(session, slug=slug)
        occ = sched.current(schedule, newsletter, now)
        if sched.is_skipped(session, occ):
            raise publish.EditionStateError(
                f"{occ.key} is skipped for {slug}; nothing to send (remove the skip first)"
            )
        edition = store.find_edition(session, newsletter_id=newsletter.id or 0, period_key=occ.key)
        if edition is None:
            edition = publish.draft_edition(
                session,
                settings=settings,
                newsletter_slug=slug,
                at=now,
                period=sched.period_of(session, occ, end=now),
                scheduled_for=occ.send_at,
            ).edition
        if (
            edition.status == EditionStatus.draft
            and schedule.approval_required
            and edition.approved_at is None
        ):
            raise publish.EditionStateError(
                f"edition {edition.id} ({occ.key}) needs an editor's approval first: "
                f"`newsletter edition approve {edition.id}`"
            )
        if schedule.local_time:  # each subscriber's own 09:00, as the scheduler would
            local_day = occ.send_at.astimezone(occ.rule.zone).date()
            publish.start_edition(
                session,
                edition_id=edition.id or 0,
                settings=settings,
                local_time=(local_day, occ.rule.at),
            )
        url = settings.mail_backend
        report = publish.send_edition(
            session,
            edition_id=edition.id or 0,
            settings=settings,
            make_backend=lambda: backend_from_url(url),
            wait=not schedule.local_time,  # later waves: the scheduler or workers send them
        )
    _print_report(report, backend_from_url(url).describe())


@app.command("scheduler")
@readable_errors
def scheduler_command(
    send: Annotated[
        bool, typer.Option(help="Also send what it starts (else leave it to workers).")
    ] = True,
) -> None:
    """Run the weekly schedules (APScheduler): draft at draft time, send at send time.

    Safe to run twice by mistake: the database's unique (newsletter, period) key and
    conditional updates make every step happen once."""
    from newsletter.runner import build_scheduler

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = _settings()
    settings.require_sending_ready()
    engine = make_engine(settings.database_url)
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
) -> None:
    """Everything for a small deployment in one process: the scheduler, a worker and the web
    app (on SQLite this is the layout to use)."""
    import uvicorn

    from newsletter import schedules
    from newsletter.runner import build_scheduler, worker_loop
    from newsletter.web.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = _settings()
    settings.require_sending_ready()
    engine = make_engine(settings.database_url)
    upgrade(engine)
    if schedules_dir is not None:
        with Session(engine) as session:
            schedules.sync(
                session, schedules.load(schedules_dir), default_site_url=settings.site_url
            )
            session.commit()
    app_ = create_app(settings, engine=engine)
    stop = threading.Event()
    aps = build_scheduler(settings, engine, send=False, blocking=False)
    aps.start()
    worker = threading.Thread(
        target=worker_loop, args=(settings, engine), kwargs={"stop": stop}, name="worker"
    )
    worker.start()
    try:
        uvicorn.run(app_, host=host, port=port, access_log=False, log_level="info")
    finally:
        stop.set()
        aps.shutdown(wait=False)
        worker.join(timeout=60)
        engine.dispose()


# --- health --------------------------------------------------------------------------------


@app.command("doctor")
def doctor_command() -> None:
    """Check configuration, database, mail backend, secret key and URLs; say how to fix."""
    from newsletter import doctor

    try:
        settings = _settings()
    except ValidationError as exc:
        raise _fail(f"configuration: {exc}") from None
    checks = doctor.run_checks(settings)
    typer.echo(doctor.render(checks), nl=False)
    raise typer.Exit(doctor.exit_code(checks))


# --- demo ----------------------------------------------------------------------------------


@app.command("demo")
@readable_errors
def demo(
    directory: Annotated[Path, typer.Option("--dir", help="Where the demo lives.")] = Path("demo"),
) -> None:
    """Run the whole path on a fresh machine: SQLite, examples, a draft, previews, a file outbox.

    Run it twice: the second run sends nothing twice.
    """
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    key_file = directory / "secret.key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(48), encoding="ascii")
        key_file.chmod(0o600)
    outbox = directory / "outbox"
    settings = _settings(
        database_url=f"sqlite:///{directory / 'newsletter.db'}",
        mail_backend=f"file://{outbox}",
        secret_key=key_file.read_text(encoding="ascii").strip(),
    )
    with _session(settings, migrate=True) as session:
        publish.default_newsletter(session, settings)
        report = importing.import_comparisons(session, path=example_comparisons())
        subs = importing.import_subscribers(
            session, path=example_subscribers(), default_newsletter=settings.newsletter
        )
        session.commit()
        typer.echo(f"imported comparisons: {report.created} created, {report.unchanged} unchanged")
        for problem in subs.rejected:
            typer.echo(f"  {problem}")
        typer.echo(_subscriber_summary(subs))
        # The examples are dated; draft the week of the newest one so the demo works any day.
        newest = session.exec(
            select(Comparison.published_at).order_by(col(Comparison.published_at).desc())
        ).first()
        outcome = publish.draft_edition(
            session, settings=settings, newsletter_slug=None, at=newest or datetime.now(UTC)
        )
        edition_id = outcome.edition.id or 0
        page, text, rendered = publish.preview_edition(
            session, edition_id=edition_id, settings=settings
        )
        (directory / "preview.html").write_text(page, encoding="utf-8")
        (directory / "preview.txt").write_text(text, encoding="utf-8")
        sent = publish.send_edition(
            session, edition_id=edition_id, settings=settings, backend=FileBackend(outbox)
        )
    typer.echo(
        f"edition {edition_id}: {outcome.period.describe()}, "
        f"{len(outcome.selection.items)} comparison(s), HTML {rendered.html_bytes:,} bytes"
    )
    _print_report(sent, f"file outbox {outbox}")
    typer.echo(
        f"\ndatabase: {directory / 'newsletter.db'}\n"
        f"preview:  {directory / 'preview.html'}\n"
        f"          {directory / 'preview.txt'}\n"
        f"outbox:   {outbox}/ ({len(list(outbox.glob('*.eml')))} .eml files)"
    )


# --- stats ---------------------------------------------------------------------------------


class StatsFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


@app.command("stats")
@readable_errors
def stats(
    newsletter: Annotated[
        str | None, typer.Option(help="Only this newsletter (slug); default: all of them.")
    ] = None,
    format: Annotated[StatsFormat, typer.Option("--format", help="table, csv or json.")] = (
        StatsFormat.table
    ),
    chart: Annotated[
        Path | None, typer.Option(help="Also draw a chart here (.png or .svg).", dir_okay=False)
    ] = None,
    weeks: Annotated[int | None, typer.Option(min=1, help="Growth: only the last N weeks.")] = None,
) -> None:
    """Per-edition sent, delivered, bounces, complaints and unsubscribes; list growth per week.

    csv prints the editions, a blank line, then the weeks; json prints {"editions", "growth"}.
    """
    # Imported here: matplotlib is slow to import and only this command needs it.
    from newsletter import chart as charts
    from newsletter import stats as reports

    chart_format: charts.ChartFormat | None = None
    if chart is not None:
        suffix = chart.suffix.lower()
        if suffix not in (".png", ".svg"):  # a usage error (exit 2), before any work
            raise typer.BadParameter(
                f"{chart.name!r}: the file name must end in .png or .svg", param_hint="--chart"
            )
        chart_format = "png" if suffix == ".png" else "svg"
    settings = _settings()
    with _session(settings) as session:
        newsletter_id = store.get_newsletter(session, slug=newsletter).id if newsletter else None
        editions = reports.edition_stats(session, newsletter_id=newsletter_id)
        growth = reports.list_growth(session, newsletter_id=newsletter_id, weeks=weeks)
    if format == StatsFormat.json:
        typer.echo(reports.report_json(editions, growth))
    elif format == StatsFormat.csv:
        typer.echo(reports.to_csv(editions))
        typer.echo(reports.to_csv(growth), nl=False)
    else:
        typer.echo(reports.to_table(editions) or "no edition has been sent yet\n")
        typer.echo(
            "list growth per ISO week (UTC):\n" + (reports.to_table(growth) or "no events yet\n"),
            nl=False,
        )
    if chart is not None and chart_format is not None:
        title = f"{newsletter or 'All newsletters'}: recipients and unsubscribes"
        chart.write_bytes(charts.draw_chart(editions, growth, fmt=chart_format, title=title))
        typer.echo(f"wrote {chart}", err=True)


# --- web -----------------------------------------------------------------------------------


@app.command("serve")
@readable_errors
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    proxy_headers: Annotated[
        bool,
        typer.Option(
            help="Trust X-Forwarded-For/-Proto from the reverse proxy (set behind one, so "
            "the per-IP limit sees visitors, not the proxy)."
        ),
    ] = False,
    forwarded_allow_ips: Annotated[
        str,
        typer.Option(
            help="The proxy's address(es), comma-separated: only its X-Forwarded-For is "
            "believed (never '*': clients could then pick their own IP)."
        ),
    ] = "127.0.0.1",
    workers: Annotated[int, typer.Option(min=1, help="Web processes.")] = 1,
) -> None:
    """Run the public web app: subscribe, confirm, unsubscribe, archive, webhooks, admin."""
    import uvicorn

    from newsletter.web.app import create_app  # the web stack only for this command

    settings = _settings()
    settings.require_sending_ready()
    create_app(settings)  # fail here, readably, on a bad key or an unmigrated database
    typer.echo(f"serving {settings.base_url} on http://{host}:{port}", err=True)
    uvicorn.run(
        "newsletter.web.app:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        proxy_headers=proxy_headers,
        forwarded_allow_ips=forwarded_allow_ips,
        # The access log would write every /u/{token} and /confirm/{token}: bearer links.
        access_log=False,
        log_level="info",
    )


def main() -> None:
    keep_freed_memory()
    app()


if __name__ == "__main__":
    main()
