"""`newsletter demo`: the whole path on a fresh machine."""

import secrets
from pathlib import Path
from typing import Annotated

import typer

from newsletter import publish
from newsletter.audience import importing
from newsletter.backends.file import FileBackend
from newsletter.cli.common import (
    _print_report,
    _session,
    _settings,
    _subscriber_summary,
    app,
    cli_clock,
    cli_now,
    readable_errors,
)
from newsletter.paths import example_comparisons, example_subscribers
from newsletter.storage import listings

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
            session,
            path=example_subscribers(),
            default_newsletter=settings.newsletter,
            now=cli_now(),
        )
        session.commit()
        typer.echo(f"imported comparisons: {report.created} created, {report.unchanged} unchanged")
        for problem in subs.rejected:
            typer.echo(f"  {problem}")
        typer.echo(_subscriber_summary(subs))
        # The examples are dated; draft the week of the newest one so the demo works any day.
        newest = listings.newest_comparison_date(session)
        outcome = publish.draft_edition(
            session, settings=settings, newsletter_slug=None, at=newest or cli_now()
        )
        edition_id = outcome.edition.id or 0
        page, text, rendered = publish.preview_edition(
            session, edition_id=edition_id, settings=settings
        )
        (directory / "preview.html").write_text(page, encoding="utf-8")
        (directory / "preview.txt").write_text(text, encoding="utf-8")
        sent = publish.send_edition(
            session,
            edition_id=edition_id,
            settings=settings,
            backend=FileBackend(outbox),
            options=publish.SendOptions(clock=cli_clock()),
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
