"""Console accounts from the command line: the first admin is made here."""

from typing import Annotated

import typer

from newsletter.cli.common import _session, _settings, cli_actor, cli_now, readable_errors, user_app
from newsletter.operations import accounts, audit
from newsletter.storage.models import Role


def _link(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/console/password/{token}"


@user_app.command("add")
@readable_errors
def user_add(
    email: Annotated[str, typer.Argument(help="The person's address (their login).")],
    role: Annotated[
        Role,
        typer.Option(help="editor: drafts; operator: sends, schedules, subscribers; admin: all."),
    ] = Role.editor,
) -> None:
    """Create a console account; prints a one-time link (48 h) where the person sets a password."""
    settings = _settings()
    now = cli_now()
    with _session(settings) as session:
        user, token = accounts.add_user(session, email=email, role=role.value, now=now)
        audit.record(
            session,
            actor=cli_actor(),
            action="user.add",
            target=f"user {user.email}",
            now=now,
            detail={"role": user.role},
        )
        session.commit()
    typer.echo(f"{user.email} ({user.role}) added; they set their password here (48 h, once):")
    typer.echo(_link(settings.base_url, token))


@user_app.command("link")
@readable_errors
def user_link(email: Annotated[str, typer.Argument(help="The user's address.")]) -> None:
    """A new one-time set-password link (a forgotten password); earlier links stop working."""
    settings = _settings()
    now = cli_now()
    with _session(settings) as session:
        user = accounts.find_user(session, email=email)
        token = accounts.password_link(session, user=user, now=now)
        audit.record(
            session, actor=cli_actor(), action="user.link", target=f"user {user.email}", now=now
        )
        session.commit()
    typer.echo(_link(settings.base_url, token))


@user_app.command("list")
@readable_errors
def user_list() -> None:
    """Every console account with its role."""
    settings = _settings()
    with _session(settings) as session:
        users = accounts.users(session)
    if not users:
        typer.echo("no users yet: `newsletter user add EMAIL --role admin` makes the first")
    for user in users:
        state = "disabled" if user.disabled else ("active" if user.password_hash else "invited")
        typer.echo(f"{user.email}\t{user.role}\t{state}")
