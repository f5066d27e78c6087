"""Edition commands (draft, preview, send, start, approve, reschedule, pause, resume, cancel,
retry-failed, status, list) and the worker."""

import sys
import threading
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import Engine

from newsletter import publish
from newsletter.backends import backend_factory, backend_from_url
from newsletter.cli.common import (
    _fail,
    _parse_at,
    _print_report,
    _send_with_progress,
    _session,
    _settings,
    app,
    cli_actor,
    cli_now,
    edition_app,
    readable_errors,
)
from newsletter.publish import senders
from newsletter.publish.breaker import limits_for
from newsletter.sending import reputation
from newsletter.storage import listings, store
from newsletter.storage.database import connection_lost
from newsletter.storage.store import MAX_REASON

# --- edition -------------------------------------------------------------------------------


@edition_app.command("draft")
@readable_errors
def edition_draft(
    newsletter: Annotated[
        str | None, typer.Option(help="Newsletter slug (default: NEWSLETTER_NEWSLETTER).")
    ] = None,
    at: Annotated[
        str | None,
        typer.Option(
            help="The moment to draft at, ISO 8601 (default now; no offset = the "
            "newsletter's time zone)."
        ),
    ] = None,
) -> None:
    """Create (or refresh) the draft of the period in play at --at; prints its id.

    With a schedule that is the edition of the next send, named by its send week (the same
    edition `schedule run-now` and the scheduler use); without one, the week containing --at.
    """
    settings = _settings()
    with _session(settings) as session:
        outcome = publish.draft_edition(
            session, settings=settings, newsletter_slug=newsletter, at=_parse_at(at)
        )
        note = publish.size_note(session, edition_id=outcome.edition.id or 0, settings=settings)
    e = outcome.edition
    verb = "created" if outcome.created else f"existing ({e.status})"
    typer.echo(
        f"edition {e.id} {verb}: {outcome.period.describe()}, "
        f"{len(outcome.selection.items)} comparison(s), {e.more_count} more"
        + ("" if outcome.created else f"; refreshed: {outcome.changes()}"),
        err=True,
    )
    _size_warning(note)
    typer.echo(str(e.id))


def _size_warning(note: str | None) -> None:
    if note:
        typer.secho(f"warning: {note}", fg=typer.colors.YELLOW, err=True)


@edition_app.command("subject")
@readable_errors
def edition_subject(
    edition_id: Annotated[int, typer.Argument(metavar="ID")],
    subject: Annotated[
        str | None, typer.Argument(help="The subject (omit with --reset).", show_default=False)
    ] = None,
    reset: Annotated[bool, typer.Option("--reset", help="Back to the computed subject.")] = False,
) -> None:
    """Give a draft its own subject, kept when the draft is refreshed; --reset undoes it."""
    if (subject is None) == (not reset):
        raise _fail("give a SUBJECT or --reset, not both and not neither")
    settings = _settings()
    with _session(settings) as session:
        edition = publish.set_subject(
            session, edition_id=edition_id, subject=None if reset else subject
        )
        session.commit()
    typer.echo(f"edition {edition_id} subject: {edition.subject}")
    if len(edition.subject) > publish.SUBJECT_BUDGET:
        typer.secho(
            f"warning: {len(edition.subject)} characters; phones and inbox lists show about "
            f"{publish.SUBJECT_BUDGET}",
            fg=typer.colors.YELLOW,
            err=True,
        )


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
    _size_warning(rendered.clip_note)
    if out is None and format == PreviewFormat.html and sys.stdout.isatty():
        raise _fail(
            f"{len(page):,} bytes of HTML would flood the terminal: add --out FILE.html (then "
            "open it in a browser), use --format text, or pipe it; editors can also preview "
            "in the console (/console)"
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
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="Senders in parallel, each with its own connection "
            "(default: NEWSLETTER_SENDERS, else four per CPU core, at most 16).",
            show_default=False,
        ),
    ] = None,
    processes: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="Processes the senders are spread over (default: one per CPU core; "
            "1 keeps them all in this process).",
            show_default=False,
        ),
    ] = None,
    wait: Annotated[
        bool, typer.Option(help="Keep going until done, waiting for deferred retries.")
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Don't ask to confirm (scripts; no terminal).")
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Render, personalize and check every message; send and record nothing.",
        ),
    ] = False,
    progress_every: Annotated[
        float,
        typer.Option(
            min=1, help="Seconds between progress lines when not on a terminal (cron, systemd)."
        ),
    ] = 10.0,
) -> None:
    """Send to every active subscriber, once each; running it again sends only what is left.

    On a terminal it first says what it is about to do and asks; --yes skips the question."""
    settings = _settings()
    url = backend or settings.mail_backend
    make_backend = backend_factory(url)  # the scheme's plugin looked up once, not per sender
    chosen = make_backend()  # a bad URL is an error before anything starts
    describe = chosen.describe()
    senders_count, process_count = senders.layout(concurrency, settings.senders, chosen, processes)
    if dry_run:
        with _session(settings) as session:
            preview = publish.dry_run(
                session, edition_id=edition_id, settings=settings, now=cli_now().timestamp()
            )
        for line in preview.lines(describe):
            typer.echo(line)
        raise typer.Exit(1 if preview.problem_count else 0)
    if not yes and sys.stdin.isatty() and sys.stdout.isatty():  # a person is there to answer
        with _session(settings) as session:
            plan = publish.send_plan(session, edition_id=edition_id)
        typer.echo(
            f"About to send edition {edition_id} ({plan.status}, {plan.subject!r}) to "
            f"{plan.audience:,} subscribers via {describe}"
            + (
                f", {senders_count} senders in {process_count} processes"
                if process_count > 1
                else f", {senders_count} senders"
                if senders_count > 1
                else ""
            )
            + "."
        )
        if not typer.confirm("Send it?", default=False):
            typer.echo("nothing was sent", err=True)
            raise typer.Exit(1)
    try:
        with _session(settings) as session:
            report = _send_with_progress(
                session,
                settings,
                edition_id,
                make_backend,
                senders_count,
                wait,
                processes=process_count,
                every=progress_every,
            )
    except Exception as exc:
        reason = connection_lost(exc)
        if reason is None:
            raise
        raise _fail(
            f"edition {edition_id}: the send lost its database connection ({reason}). Nothing "
            "is lost: every message already handed to the mail backend is in the journal and "
            "is recorded on the next run, so nobody is mailed twice. When the database is "
            f"back, run `newsletter edition send {edition_id}` to finish (or leave it to "
            "`newsletter worker`)."
        ) from None
    _print_report(report, describe)
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


@edition_app.command("start")
@readable_errors
def edition_start(edition_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Fix the audience and hand the edition to workers (`newsletter worker`) to send."""
    settings = _settings()
    with _session(settings) as session:
        added = publish.start_edition(
            session, edition_id=edition_id, settings=settings, actor=cli_actor(), now=cli_now()
        )
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
        edition = publish.approve_edition(session, edition_id=edition_id, by=by, now=cli_now())
        note = publish.size_note(session, edition_id=edition_id, settings=settings)
    typer.echo(f"edition {edition_id} ({edition.period_key}) approved by {by}")
    _size_warning(note)


@edition_app.command("reschedule")
@readable_errors
def edition_reschedule(
    edition_id: Annotated[int, typer.Argument(metavar="ID")],
    at: Annotated[
        str,
        typer.Option(
            "--at",
            help="The new send time, ISO 8601 (e.g. 2026-12-08T15:00); without an offset, in "
            "the newsletter's time zone.",
            show_default=False,
        ),
    ],
) -> None:
    """Move a scheduled draft's send time, earlier or later (before the next regular send);
    its content and approval stay."""
    when = _parse_at(at)
    settings = _settings()
    with _session(settings) as session:
        before, after = publish.reschedule_edition(
            session, edition_id=edition_id, send_at=when, now=cli_now(), actor=cli_actor()
        )
        session.commit()
    was = f"{before:%Y-%m-%d %H:%M} UTC" if before else "no send time"
    typer.echo(f"edition {edition_id} now sends at {after:%Y-%m-%d %H:%M} UTC (was {was})")


@edition_app.command("unapprove")
@readable_errors
def edition_unapprove(
    edition_id: Annotated[int, typer.Argument(metavar="ID")],
    by: Annotated[str, typer.Option(help="Who withdraws it (recorded).")] = "an editor",
) -> None:
    """Withdraw an approval before the send starts; the draft is held again."""
    settings = _settings()
    with _session(settings) as session:
        edition = publish.withdraw_approval(session, edition_id=edition_id, by=by)
    typer.echo(f"edition {edition_id} ({edition.period_key}): approval withdrawn by {by}")


@edition_app.command("pause")
@readable_errors
def edition_pause(
    edition_id: Annotated[int, typer.Argument(metavar="ID")],
    reason: Annotated[str, typer.Option(help="Shown in `status`.")] = "paused by an operator",
) -> None:
    """Stop sending; takes effect before the next batch of every running send."""
    settings = _settings()
    with _session(settings) as session:
        if len(reason) > MAX_REASON:
            # Checked before anything changes: the edition must not keep sending because a
            # long reason failed to store.
            raise _fail(f"--reason: at most {MAX_REASON} characters (this one has {len(reason)})")
        publish.pause_edition(session, edition_id=edition_id, reason=reason, actor=cli_actor())
    typer.echo(f"edition {edition_id} paused")


@edition_app.command("resume")
@readable_errors
def edition_resume(edition_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Allow a paused edition to send again (run `send` or let workers pick it up)."""
    settings = _settings()
    with _session(settings) as session:
        publish.resume_edition(session, edition_id=edition_id, actor=cli_actor())
    typer.echo(f"edition {edition_id} resumed; nothing already sent is sent again")


@edition_app.command("cancel")
@readable_errors
def edition_cancel(edition_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Send nothing more; what was sent stays recorded."""
    settings = _settings()
    with _session(settings) as session:
        publish.cancel_edition(session, edition_id=edition_id, actor=cli_actor())
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
            session,
            edition_id=edition_id,
            include_unknown=include_unknown,
            code=code,
            actor=cli_actor(),
        )
    typer.echo(f"edition {edition_id}: {count} deliveries re-queued")


@edition_app.command("status")
@readable_errors
def edition_status(edition_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Counts by state, send rate, ETA, the latest errors and who did what when."""
    settings = _settings()
    with _session(settings) as session:
        live = publish.live_edition(session, edition_id=edition_id, now=cli_now())
        history = store.edition_events(session, edition_id=edition_id)
        reading = reputation.read(session, edition_id=edition_id, since_resume=False)
    edition = live.edition
    typer.echo(f"edition {edition_id} ({edition.period_key}): {live.state}")
    if edition.status_reason:
        typer.echo(f"  reason: {edition.status_reason}")
    if live.awaiting is not None:
        typer.echo(
            f"  approve with `newsletter edition approve {edition_id} --by NAME` or in the console"
        )
    if live.progress.counts["unknown"]:
        typer.echo("  " + publish.unknown_advice(edition_id, live.progress.counts["unknown"]))
    typer.echo("  " + ", ".join(f"{k} {v}" for k, v in live.progress.counts.items()))
    eta = f"{live.eta_seconds / 60:.1f} min" if live.eta_seconds else "-"
    typer.echo(f"  rate: {live.rate:.1f}/s over the last minute; left: {live.left}; ETA: {eta}")
    if live.next_retry_at:
        typer.echo(f"  next retry: {live.next_retry_at:%Y-%m-%d %H:%M:%S} UTC")
    if reading.attempted:
        limits = limits_for(settings)
        typer.echo(
            f"  reputation: complaints {reading.complaints}/{reading.accepted} = "
            f"{reading.complaint_rate:.2%} (limit {limits.complaint_rate:.2%}), hard bounces "
            f"{reading.hard_bounces}/{reading.attempted} = {reading.bounce_rate:.2%} "
            f"(limit {limits.bounce_rate:.2%}; the breaker reads them from "
            f"{limits.min_sample} messages)"
        )
    for email, code, text in live.progress.recent_errors:
        typer.echo(f"  error: {email}: {code or ''} {text}")
    for event in reversed(history):
        detail = f": {event.detail}" if event.detail else ""
        typer.echo(f"  {event.at:%Y-%m-%d %H:%M:%S} UTC {event.action} by {event.actor}{detail}")


@edition_app.command("list")
@readable_errors
def edition_list() -> None:
    """Every edition: id, newsletter, period, status, subject, delivery counts."""
    settings = _settings()
    with _session(settings) as session:
        rows = listings.all_editions(session)
        if not rows:
            typer.echo("no editions yet: `newsletter edition draft` makes one")
        for e in rows:
            c = publish.delivery_counts(session, edition_id=e.id or 0)
            state = publish.state_line(e.status, c, publish.awaiting_approval(session, e))
            typer.echo(
                f"{e.id}\t{e.period_key}\t{state}\tsent {c['sent'] + c['queued']}"
                f"\tfailed {c['failed']}\t{e.subject}"
            )


# --- worker --------------------------------------------------------------------------------


@app.command("worker")
@readable_errors
def worker(
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Senders in this process.")] = 1,
    once: Annotated[bool, typer.Option(help="Exit when no edition has work left.")] = False,
    poll: Annotated[float, typer.Option(min=0.1, help="Seconds between looks for work.")] = 2.0,
    progress_every: Annotated[
        float, typer.Option(min=1, help="Seconds between progress lines of a long send.")
    ] = 10.0,
) -> None:
    """Send every edition in `sending` state, claiming batches from the database.

    Run several on PostgreSQL (any number of machines); on SQLite one is enough.
    """
    from newsletter.service.runner import worker_loop  # with APScheduler: only workers load it

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
            say=lambda line: typer.echo(line, err=True),
            progress_every=progress_every,
        )
