"""``newsletter bounces serve`` and ``newsletter bounces poll``: the two ways bounce mail comes
in when the engine sends over smtp:// with a VERP return path (NEWSLETTER_BOUNCE_ADDRESS)."""

from __future__ import annotations

import threading
from typing import Annotated

import typer
from sqlmodel import Session

from newsletter.cli.common import (
    _settings,
    bounces_app,
    cli_clock,
    cli_now,
    configure_logging,
    readable_errors,
)
from newsletter.config import ConfigError, Settings
from newsletter.feedback import mailbox
from newsletter.service.bounce_intake import Intake, paths_for, poll_mailbox, take
from newsletter.storage.database import make_engine, require_head


def _ready(settings: Settings) -> None:
    settings.require_sending_ready()  # the secret key verifies the return paths
    if not settings.bounce_address:
        raise ConfigError(
            "NEWSLETTER_BOUNCE_ADDRESS is not set: without a VERP return path a bounce can't "
            "be tied to its delivery (set it to e.g. bounces@your-domain, whose mail the MTA "
            "hands to this command)"
        )


@bounces_app.command("serve")
@readable_errors
def bounces_serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 2525,
    lmtp: Annotated[
        bool, typer.Option("--lmtp/--smtp", help="Speak LMTP (Postfix lmtp:, Exim lmtp).")
    ] = False,
    accept: Annotated[
        list[str] | None,
        typer.Option(
            metavar="ADDRESS",
            help="Also take mail for this address (a feedback-loop address); repeatable.",
        ),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also the libraries' INFO lines (aiosmtpd).")
    ] = False,
) -> None:
    """Take bounce and complaint mail over SMTP or LMTP until Ctrl-C: every report is tied to
    its delivery by the signed return path and acted on like a provider webhook; 250 only
    after it is stored, 451 (the MTA retries) when the database fails."""
    # aiosmtpd (about 1 MiB) only for the listener, not in every command
    from newsletter.service.bounce_server import BounceHandler, BounceServer

    configure_logging(verbose=verbose)
    settings = _settings()
    _ready(settings)
    paths = paths_for(settings)
    assert paths is not None
    engine = make_engine(settings.database_url, create=False)
    require_head(engine)

    def handle(raw: bytes, rcpts: list[str]) -> Intake:
        with Session(engine) as session:
            return take(session, settings, raw, envelope=rcpts, now=cli_now())

    server = BounceServer(
        BounceHandler(handle, paths, accept=accept or (), lmtp=lmtp),
        host=host,
        port=port,
        lmtp=lmtp,
    )
    try:
        server.start()
    except (OSError, RuntimeError) as exc:
        raise ConfigError(f"--host/--port: can't listen on {host}:{port}: {exc}") from None
    typer.echo(
        f"taking bounces for {paths.address} (and its +tags) over "
        f"{'LMTP' if lmtp else 'SMTP'} on {host}:{port}; Ctrl-C stops"
    )
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        engine.dispose()


@bounces_app.command("poll")
@readable_errors
def bounces_poll(
    limit: Annotated[
        int | None, typer.Option(min=1, help="Read at most this many messages.")
    ] = None,
) -> None:
    """Read the bounce mailbox (NEWSLETTER_BOUNCE_MAILBOX, IMAP or POP3) once: each report is
    acted on and its message deleted; a message that can't be stored stays for next time."""
    settings = _settings()
    _ready(settings)
    if not settings.bounce_mailbox:
        raise ConfigError(
            "NEWSLETTER_BOUNCE_MAILBOX is not set (imaps://user:password@host/INBOX or "
            "pop3s://user:password@host)"
        )
    url = mailbox.MailboxURL.parse(settings.bounce_mailbox)
    engine = make_engine(settings.database_url, create=False)
    try:
        require_head(engine)
        result, intake = poll_mailbox(settings, engine, clock=cli_clock(), limit=limit)
    finally:
        engine.dispose()
    typer.echo(
        f"{url.describe()}: {result.seen} messages, {result.handled} taken and deleted, "
        f"{result.kept} kept; {intake.describe()}"
    )
    for error in result.errors:
        typer.echo(f"  kept: {error}", err=True)
    for trip in intake.trips:
        typer.echo(f"edition {trip.edition_id}: {trip.reason}", err=True)
