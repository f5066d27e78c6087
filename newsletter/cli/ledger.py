"""``newsletter ledger prune``: delete the delivery rows of old finished editions, keeping
their counts (see :mod:`newsletter.operations.retention`)."""

from __future__ import annotations

import sys
from datetime import timedelta
from typing import Annotated

import typer

from newsletter.cli.common import _fail, _session, _settings, cli_now, ledger_app, readable_errors
from newsletter.operations import retention


@ledger_app.command("prune")
@readable_errors
def ledger_prune(
    days: Annotated[
        int | None,
        typer.Option(
            min=1, help="Editions finished more than this many days ago (default: the setting)."
        ),
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Don't ask to confirm (scripts, cron).")
    ] = False,
) -> None:
    """Delete the delivery rows of sent or cancelled editions older than the retention; their
    counts by state are kept, and stats, status and reports read them."""
    settings = _settings()
    keep = days or settings.delivery_retention_days
    if not keep:
        raise _fail(
            "--days: how old an edition must be; give --days N or set "
            "NEWSLETTER_DELIVERY_RETENTION_DAYS"
        )
    now = cli_now()
    older_than = now - timedelta(days=keep)
    with _session(settings) as session:
        editions = retention.prunable(session, older_than=older_than)
        if not editions:
            typer.echo(f"nothing to prune: no finished edition before {older_than:%Y-%m-%d}")
            return
        if not yes:
            if not (sys.stdin.isatty() and sys.stdout.isatty()):
                raise _fail(
                    "--yes: pruning deletes rows; confirm with --yes when not on a terminal"
                )
            ids = ", ".join(str(e) for e in editions[:10]) + (" ..." if len(editions) > 10 else "")
            if not typer.confirm(
                f"Delete the delivery rows of {len(editions)} editions ({ids}), keeping counts?",
                default=False,
            ):
                raise typer.Exit(1)
        report = retention.prune(session, older_than=older_than, now=now)
        left = retention.delivery_rows(session)
    typer.echo(
        f"pruned {report.rows:,} delivery rows of {report.editions} editions finished before "
        f"{older_than:%Y-%m-%d}; their counts are kept; {left:,} rows left"
    )
