"""Verdict writers from the command line: see what a writer makes of one comparison, or write
the suggestions for a draft (as the console's button does)."""

import json
import sys
from typing import Annotated

import typer

from newsletter import publish, writers
from newsletter.cli.common import (
    _session,
    _settings,
    cli_actor,
    cli_now,
    readable_errors,
    writers_app,
)
from newsletter.storage import store
from newsletter.writers.pricing import estimate
from newsletter.writers.suggestions import cached, store_written, suggest_recorded


def _show(piece: str) -> None:
    """A piece of the answer as it arrives, on stderr (stdout carries the result)."""
    sys.stderr.write(piece)
    sys.stderr.flush()


@writers_app.command("try")
@readable_errors
def writers_try(
    slug: Annotated[str, typer.Argument(help="The comparison's slug.")],
    writer_name: Annotated[
        str | None,
        typer.Option("--writer", help="rules, claude or huggingface (default: NEWSLETTER_WRITER)."),
    ] = None,
) -> None:
    """Show what a writer makes of one comparison: its answer as it streams, whether it is
    grounded in the reviews, and what it cost. Nothing changes in any edition; the answer is
    kept, so drafting with the same writer later costs nothing for this content."""
    settings = _settings()
    writer = writers.make_writer(settings, writer_name)
    now = cli_now()
    with _session(settings) as session:
        comparison = store.get_comparison(session, slug=slug)
        before = cached(session, comparison, writer)
        if before is not None:
            typer.echo(f"already written by {writer.name} ({writer.model}) for this content:")
            typer.echo(before.verdict or f"refused: {before.refusal}")
            return
        written = writer.write(comparison, on_delta=_show)
        sys.stderr.write("\n")
        store_written(session, comparison, written, now)
        session.commit()
    usage = written.usage
    cost = estimate(written.model, usage)
    via = f" via {written.provider}" if written.provider else ""
    typer.echo(
        f"{written.writer} ({written.model}{via}, {written.latency_ms} ms): "
        f"{usage.input_tokens:,} in, {usage.cache_creation_tokens:,} cache write, "
        f"{usage.cache_read_tokens:,} cache read, {usage.output_tokens:,} out"
        + (f", about ${cost:.4f}" if cost is not None else "")
    )
    if written.verdict is None:
        typer.echo(f"refused: {written.refusal}; the rules' verdict would stand")
        raise typer.Exit(1)
    typer.echo(json.dumps(written.verdict.model_dump(), indent=2, ensure_ascii=False))


@writers_app.command("suggest")
@readable_errors
def writers_suggest(
    edition_id: Annotated[int, typer.Argument(metavar="ID", help="The draft edition.")],
) -> None:
    """Write the suggestions for a draft with its newsletter's writer (the schedule file's
    ``writer``, else NEWSLETTER_WRITER), reusing what was written for the same content,
    within NEWSLETTER_WRITER_BUDGET; editors accept or reject them in the console."""
    settings = _settings()
    now = cli_now()
    with _session(settings) as session:
        store.get_edition(session, edition_id=edition_id)
        writer = writers.for_edition(session, settings, edition_id)
        report = suggest_recorded(
            session,
            edition_id=edition_id,
            writer=writer,
            budget=settings.writer_budget,
            now=now,
            actor=cli_actor(),
            intro_from=lambda: publish.edition_verdicts(
                session,
                edition=store.get_edition(session, edition_id=edition_id),
                settings=settings,
            ),
        )
    typer.echo(
        f"edition {edition_id}: {report.written} written, {report.reused} reused, "
        f"intro {report.intro or 'not written'}, "
        f"{report.tokens:,} tokens" + (f", about ${report.cost_usd:.4f}" if report.cost_usd else "")
    )
    for note in report.notes:
        typer.echo(f"  {note}")
