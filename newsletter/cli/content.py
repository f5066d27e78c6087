"""Database, import, newsletters and subscribers commands."""

import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from sqlmodel import Session

from newsletter import publish
from newsletter.audience import exporting, importing, subscriptions
from newsletter.audience.importing import comparisons_json_schema
from newsletter.cli.common import (
    _fail,
    _session,
    _settings,
    _subscriber_summary,
    cli_now,
    db_app,
    import_app,
    newsletters_app,
    readable_errors,
    subscribers_app,
)
from newsletter.edition.content import SLUG_PATTERN
from newsletter.storage import listings, store
from newsletter.storage.database import current_revision, make_engine, upgrade
from newsletter.storage.models import (
    Subscriber,
)
from newsletter.storage.planner import refresh_statistics

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
        before = current_revision(engine)
        upgrade(engine, revision)
        after = current_revision(engine)
    finally:
        engine.dispose()
    where = engine.url.render_as_string(hide_password=True)
    if before == after:
        typer.echo(f"database {where} is already at {after}; nothing to apply")
    else:
        typer.echo(f"database {where}: applied {before or 'nothing (empty)'} -> {after}")


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


@contextmanager
def _import_progress() -> Iterator[Callable[[int, int], None] | None]:
    """A rich progress bar on stderr when it is a terminal (lines, rate, time left); else
    nothing (a pipe or a log gets the summary only)."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        Task,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task: Task) -> Text:
            return Text(f"{task.speed:,.0f} lines/s" if task.speed else "")

    columns = (
        TextColumn("importing"),
        BarColumn(),
        MofNCompleteColumn(),
        Rate(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("import", total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


@subscribers_app.command("export")
@readable_errors
def export_subscribers(
    newsletter: Annotated[
        str | None, typer.Option(help="Only this newsletter's subscribers (slug).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write here (default: standard output).", dir_okay=False)
    ] = None,
) -> None:
    """Write the subscribers who may be mailed as the CSV `import subscribers` reads."""
    settings = _settings()
    with _session(settings) as session:
        if newsletter is not None:
            store.get_newsletter(session, slug=newsletter)  # one line for an unknown slug
        if out is None:
            count = exporting.export_subscribers(session, sys.stdout, newsletter=newsletter)
        else:
            with out.open("w", encoding="utf-8", newline="") as fh:
                count = exporting.export_subscribers(session, fh, newsletter=newsletter)
    typer.echo(f"{count} subscribers exported", err=True)


@import_app.command("subscribers")
@readable_errors
def import_subscribers(
    file: Annotated[Path, typer.Argument(help="A CSV file (see subscribers/README.md).")],
    strict: Annotated[bool, typer.Option(help="Import nothing if any line is rejected.")] = False,
) -> None:
    """Import subscribers; each rejected line is reported with its number and reason.

    On a terminal a progress bar with the rate and the time left follows the lines."""
    settings = _settings()
    with _session(settings) as session, _import_progress() as on_progress:
        publish.default_newsletter(session, settings)
        report = importing.import_subscribers(
            session,
            path=file,
            default_newsletter=settings.newsletter,
            strict=strict,
            on_progress=on_progress,
            now=cli_now(),
        )
        session.commit()
        refresh_statistics(session, ("subscriber", "subscription"))
    for problem in report.rejected:
        typer.echo(problem, err=True)
    typer.echo(_subscriber_summary(report))


# --- newsletters ---------------------------------------------------------------------------


@newsletters_app.command("list")
@readable_errors
def newsletters_list() -> None:
    """Every newsletter with its time zone, cap and active subscribers."""
    settings = _settings()
    with _session(settings) as session:
        publish.default_newsletter(session, settings)
        session.commit()
        for n in listings.newsletters(session, by="slug"):
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
        for e in listings.subscriber_events(session, subscriber_id=person.id, newest_first=False):
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


@subscribers_app.command("expire")
@readable_errors
def subscribers_expire(
    days: Annotated[
        int | None,
        typer.Option(
            min=1, max=365, help="Days a signup may wait (default: NEWSLETTER_PENDING_DAYS)."
        ),
    ] = None,
) -> None:
    """Forget signups nobody confirmed in time, and the addresses nothing else holds. The
    scheduler does this on every tick; this is for a site that runs no scheduler."""
    settings = _settings()
    keep = days or settings.pending_days
    with _session(settings) as session:
        forgotten = subscriptions.expire_pending(session, now=cli_now(), keep_days=keep)
        session.commit()
    typer.echo(f"forgot {forgotten} unconfirmed signups older than {keep} days")


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
    if len(name.strip()) > 200:  # the column's size: checked before anything is stored
        raise _fail(f"--name: at most 200 characters (this one has {len(name.strip())})")
    # The same validation as the settings: an http(s) URL, a valid IANA zone.
    settings = _settings()
    checked = _settings(timezone=timezone, site_url=site_url or settings.site_url)
    with _session(settings) as session:
        if listings.newsletter_exists(session, slug=slug):
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
