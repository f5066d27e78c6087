"""Health, reports and the web app: `doctor`, `stats`, `serve`."""

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from newsletter.cli.common import (
    _fail,
    _session,
    _settings,
    app,
    base_url_mismatch,
    cli_now,
    readable_errors,
    settings_problem,
)
from newsletter.operations import chart as charts
from newsletter.operations import stats as reports
from newsletter.operations import statsformat as formats
from newsletter.storage import store

# --- health --------------------------------------------------------------------------------


@app.command("doctor")
def doctor_command() -> None:
    """Check configuration, database, mail backend, secret key and URLs; say how to fix."""
    # The checks load requests and dnspython (about 8 MiB), which no other command needs.
    from newsletter import doctor

    try:
        settings = _settings()
    except ValidationError as exc:
        raise _fail(f"configuration: {settings_problem(exc)}") from None
    checks = doctor.run_checks(settings)
    typer.echo(doctor.render(checks))  # ends with a newline, like every other command
    raise typer.Exit(doctor.exit_code(checks))


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
        growth = reports.list_growth(
            session, newsletter_id=newsletter_id, weeks=weeks, until=cli_now(), today=True
        )
    if format == StatsFormat.json:
        typer.echo(formats.report_json(editions, growth))
    elif format == StatsFormat.csv:
        typer.echo(formats.to_csv(editions))
        typer.echo(formats.to_csv(growth), nl=False)
    else:
        typer.echo(formats.to_table(editions) or "no edition has been sent yet\n")
        typer.echo(
            "list growth per ISO week (UTC):\n" + (formats.to_table(growth) or "no events yet\n"),
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
    if warning := base_url_mismatch(settings.base_url, host, port):
        typer.echo(warning, err=True)
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
