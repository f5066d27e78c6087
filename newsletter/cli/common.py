"""What every command shares: the Typer apps, settings and sessions, readable errors, and
the send report. Commands live in the sibling modules, one per group."""

import getpass
import logging
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from functools import wraps
from importlib.metadata import PackageNotFoundError, version
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

import typer
from pydantic import ValidationError
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlmodel import Session

from newsletter import publish
from newsletter.audience import importing
from newsletter.clock import Clock, system_clock
from newsletter.config import ConfigError, Settings
from newsletter.errors import NewsletterError
from newsletter.sending.progress import SendProgress, duration, lines_every
from newsletter.storage.database import (
    make_engine,
    require_head,
    session_scope,
    upgrade,
)

#: `-h` as well as `--help`, on every command (sub-apps inherit the root's context settings).
HELP = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(
    help="Weekly AI Tool Verdicts: import comparisons and subscribers, draft, preview and send "
    "editions. Settings come from NEWSLETTER_* environment variables (see the README).",
    no_args_is_help=True,
    add_completion=False,
    context_settings=HELP,
)


def _print_version(value: bool) -> None:
    if value:
        try:
            typer.echo(f"newsletter {version('newsletter-engine')}")
        except PackageNotFoundError:  # pragma: no cover - run from a bare checkout
            typer.echo("newsletter (not installed)")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: bool = typer.Option(
        False,
        "--version",
        callback=_print_version,
        is_eager=True,
        help="Print the version and exit.",
    ),
) -> None:
    """Weekly AI Tool Verdicts: import comparisons and subscribers, draft, preview and send
    editions. Settings come from NEWSLETTER_* environment variables (see the README)."""
    # psycopg warns "error ignored terminating <psycopg.Pipeline [BAD]>" while cleaning up after
    # a lost connection; the command says what happened in its own words instead.
    logging.getLogger("psycopg").setLevel(logging.ERROR)


db_app = typer.Typer(help="Database schema migrations.", no_args_is_help=True)
ledger_app = typer.Typer(
    help="The delivery ledger: prune the rows of old editions, keeping their counts.",
    no_args_is_help=True,
)
import_app = typer.Typer(
    help="Import comparisons (JSON) and subscribers (CSV).", no_args_is_help=True
)
edition_app = typer.Typer(help="Draft, preview and send editions.", no_args_is_help=True)
newsletters_app = typer.Typer(help="List and add newsletters.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(import_app, name="import")
app.add_typer(ledger_app, name="ledger")
app.add_typer(edition_app, name="edition")
app.add_typer(newsletters_app, name="newsletters")
subscribers_app = typer.Typer(help="Look up and remove subscribers.", no_args_is_help=True)
app.add_typer(subscribers_app, name="subscribers")
schedule_app = typer.Typer(
    help="Weekly schedules: check, sync, list, pause, skip.", no_args_is_help=True
)
app.add_typer(schedule_app, name="schedule")
user_app = typer.Typer(help="Console accounts: editors, operators, admins.", no_args_is_help=True)
app.add_typer(user_app, name="user")
writers_app = typer.Typer(
    help="Verdict writers: try one on a comparison, or write suggestions for a draft.",
    no_args_is_help=True,
)
app.add_typer(writers_app, name="writers")
dkim_app = typer.Typer(
    help="DKIM signing keys for the messages the engine sends itself.", no_args_is_help=True
)
app.add_typer(dkim_app, name="dkim")
bounces_app = typer.Typer(
    help="Bounce and complaint reports that arrive as mail (smtp:// sends with VERP).",
    no_args_is_help=True,
)
app.add_typer(bounces_app, name="bounces")

P = ParamSpec("P")
R = TypeVar("R")
#: Errors a person can fix that are not the engine's own (a missing or unreadable file).
_FILE_ERRORS = (FileNotFoundError, IsADirectoryError, PermissionError)


def _reason(error: Mapping[str, Any]) -> str:
    """A validation error's message without pydantic's "Value error, " prefix."""
    return str(error.get("msg", "")).removeprefix("Value error, ")


def settings_problem(exc: ValidationError) -> str:
    """A settings error as one line naming each variable and what is allowed (pydantic's own
    text spans four lines per error, with a link)."""
    problems = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error.get("loc") else ""
        message = _reason(error)
        variable = field if field.startswith("NEWSLETTER_") else f"NEWSLETTER_{field.upper()}"
        problems.append(message if message.startswith("NEWSLETTER_") else f"{variable}: {message}")
    return "; ".join(problems)


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def readable_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn the errors a user can fix (:class:`~newsletter.errors.NewsletterError`, settings, files,
    the database) into one red line and the error's exit code, never a traceback."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except NewsletterError as exc:
            for problem in exc.problems:
                typer.echo(problem, err=True)
            message = exc.headline()
            if exc.hint and exc.hint not in message:  # some errors carry it in their text
                message += f"\n{exc.hint}"
            raise _fail(message, exc.exit_code) from None
        except ValidationError as exc:
            raise _fail(f"configuration: {settings_problem(exc)}") from None
        except _FILE_ERRORS as exc:
            raise _fail(str(exc)) from None
        except OperationalError as exc:
            # The driver's own first line (no URL, so no password), e.g. connection refused.
            first = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
            raise _fail(f"database: {first}") from None
        except ArgumentError:
            raise _fail("NEWSLETTER_DATABASE_URL is not a valid SQLAlchemy URL") from None

    return wrapper


def configure_logging(*, verbose: bool) -> None:
    """Log lines for the long-running commands: the engine's own at INFO (what it drafted,
    started, sent, forgot), everybody else's (APScheduler's "Running job" every 30 s, Alembic,
    uvicorn) only from WARNING, unless ``verbose``."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(message)s",
    )
    logging.getLogger("newsletter").setLevel(logging.INFO)


VERBOSE_HELP = "Also log the libraries' INFO lines (APScheduler's job runs, Alembic, uvicorn)."

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0", "::"})


def base_url_mismatch(base_url: str, host: str, port: int) -> str | None:
    """A warning when ``NEWSLETTER_BASE_URL`` names this machine at another port than the one
    served: the pages still work (their links are host-relative), but every link in every
    email, confirmations included, would point at the other port.

    A public base URL (behind a reverse proxy on 443) differs from the local port by design
    and gets no warning.
    """
    parts = urlsplit(base_url)
    named = (parts.hostname or "").lower()
    if named not in LOOPBACK_HOSTS and named != host.lower():
        return None
    linked = parts.port or (443 if parts.scheme == "https" else 80)
    if linked == port:
        return None
    fixed = parts._replace(netloc=f"{parts.hostname}:{port}").geturl()
    return (
        f"warning: NEWSLETTER_BASE_URL is {base_url}, but this serves port {port}: links in "
        f"emails (confirmations and unsubscribes too) will point at port {linked}; set "
        f"NEWSLETTER_BASE_URL={fixed} unless a proxy forwards {linked} here"
    )


def _settings(**overrides: Any) -> Settings:
    """The settings, with a command's options over them; a bad option is named as the option
    (``--site-url: ...``), not as the variable the user did not set."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        options = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error.get("loc") else ""
            if field in given:
                message = _reason(error)
                options.append(f"--{field.replace('_', '-')}: {message}")
        if options:
            raise ConfigError("; ".join(options)) from None
        raise


@contextmanager
def _session(settings: Settings, *, migrate: bool = False) -> Iterator[Session]:
    engine = make_engine(settings.database_url, create=migrate)
    try:
        if migrate:
            upgrade(engine)
        else:
            require_head(engine)
        with session_scope(engine) as session:
            yield session
    finally:
        engine.dispose()


def _subscriber_summary(report: importing.SubscriberImportReport) -> str:
    return (
        f"subscribers: {report.created} new, {report.updated} updated, "
        f"{report.subscribed} subscriptions added, {report.kept_unsubscribed} kept unsubscribed, "
        f"{report.suppressed} suppressed left alone, {len(report.rejected)} line(s) rejected"
    )


#: The clock commands read. The CLI is an entry point, one of the few places that reads the
#: real time; a caller running commands in-process (a test) sets this to pin it.
CLI_CLOCK: ContextVar[Clock] = ContextVar("cli_clock", default=system_clock)


def cli_clock() -> Clock:
    """The command's clock (see :data:`CLI_CLOCK`)."""
    return CLI_CLOCK.get()


def cli_now() -> datetime:
    """The time this command acts at (see :func:`cli_clock`)."""
    return cli_clock()()


def _parse_at(value: str | None) -> datetime:
    if value is None:
        return cli_now()
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise _fail(f"--at: {value!r} is not an ISO 8601 date or time") from None


def cli_actor() -> str:
    """Who runs this command, for the edition's history: ``cli (login name)``."""
    try:
        return f"cli ({getpass.getuser()})"
    except (KeyError, OSError):  # no name for this uid (a bare container)
        return "cli"


def _send_with_progress(
    session: Session,
    settings: Settings,
    edition_id: int,
    make_backend: Callable[[], Any],
    concurrency: int,
    wait: bool,
    every: float = 10.0,
    *,
    processes: int = 1,
) -> publish.SendReport:
    """Send, showing progress message by message: a bar on a terminal, a line every
    ``every`` seconds otherwise (cron, systemd, a pipe)."""
    progress = SendProgress()
    with watching(edition_id, progress, every=every):
        return publish.send_edition(
            session,
            edition_id=edition_id,
            settings=settings,
            backend=make_backend,
            options=publish.SendOptions(
                concurrency=concurrency,
                processes=processes,
                wait=wait,
                actor=cli_actor(),
                clock=cli_clock(),
                progress=progress,
            ),
        )


@contextmanager
def watching(edition_id: int, progress: SendProgress, *, every: float) -> Iterator[None]:
    """Show ``progress`` while the block runs, from a thread that only reads it."""
    stop = threading.Event()
    if sys.stderr.isatty():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        bar = Progress(
            TextColumn("sending edition {task.fields[edition]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} msg/s, {task.fields[eta]} left"),
            TextColumn("{task.fields[problems]}"),
            transient=True,
        )
        task = bar.add_task("send", total=None, edition=edition_id, rate="-", eta="?", problems="")

        def draw() -> None:
            while True:
                snap = progress.snapshot()
                bar.update(
                    task,
                    completed=snap.done,
                    total=snap.total,
                    rate=f"{snap.rate:.1f}",
                    eta=duration(snap.eta),
                    problems=f"{snap.problems} not sent" if snap.problems else "",
                )
                if stop.wait(0.2):
                    return

        with bar:
            painter = threading.Thread(target=draw, name="progress", daemon=True)
            painter.start()
            try:
                yield
            finally:
                stop.set()
                painter.join()
        return

    with lines_every(
        edition_id, progress, every=every, say=lambda line: typer.echo(line, err=True)
    ):
        yield


def _print_report(report: publish.SendReport, backend: str) -> None:
    run, totals = report.run, report.totals
    e = report.edition
    if run.attempted == 0 and e.status == "sent":
        typer.echo(f"edition {e.id} was already sent; nothing sent again")
    typer.echo(
        f"edition {e.id} via {backend}: sent {run.sent}, failed {run.failed}, "
        f"deferred {run.deferred}, unknown {run.unknown}, skipped {run.skipped} (this run)"
        + (f", taken over by another sender {run.taken_over}" if run.taken_over else "")
        + (f", answers not recorded {run.unrecorded}" if run.unrecorded else "")
    )
    typer.echo(
        "totals: "
        + ", ".join(f"{k} {v}" for k, v in totals.items() if v)
        + f"; status {publish.state_line(e.status, totals, None)}"
    )
    if run.stopped_because:
        typer.echo(f"stopped: {run.stopped_because}", err=True)
    for error in run.errors:
        typer.echo(f"  {error}", err=True)
    if run.deferred:
        typer.echo("deferred deliveries are retried by running `edition send` again", err=True)
    if totals.get("unknown"):
        typer.echo(publish.unknown_advice(e.id or 0, totals["unknown"]), err=True)
