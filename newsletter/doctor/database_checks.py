"""Checks of the database: reachable, migrated, and someone able to sign in to the console."""

from __future__ import annotations

import math
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlmodel import Session, col, select

from newsletter.config import Settings
from newsletter.doctor.check import Check
from newsletter.storage.database import (
    DatabaseUnusable,
    alembic_config,
    current_revision,
    head_revision,
    make_engine,
)
from newsletter.storage.models import User

# --- database ------------------------------------------------------------------------------


def check_database(settings: Settings, timeout: float) -> list[Check]:
    try:
        url = make_url(settings.database_url)
    except Exception:  # any parse error; its message may quote the password
        fix = "Set NEWSLETTER_DATABASE_URL, e.g. sqlite:///./newsletter.db."
        return [Check("database", False, "NEWSLETTER_DATABASE_URL is not a database URL", fix)]
    shown = url.render_as_string(hide_password=True)
    skipped = Check("schema", None, "not checked: the database is not reachable")
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        if not Path(str(url.database)).exists():
            fix = "Run `newsletter db upgrade` to create it, or fix NEWSLETTER_DATABASE_URL."
            return [Check("database", False, f"{shown}: the file does not exist", fix), skipped]
    if url.get_backend_name() == "postgresql" and "connect_timeout" not in url.query:
        url = url.update_query_dict({"connect_timeout": str(max(1, math.ceil(timeout)))})
    try:
        engine = make_engine(url.render_as_string(hide_password=False), create=False)
    except ImportError as exc:
        fix = "Install the driver, e.g. `pip install 'newsletter-engine[postgres]'`."
        return [Check("database", False, f"{shown}: driver missing ({exc.name})", fix), skipped]
    except DatabaseUnusable as exc:
        return [
            Check("database", False, f"{shown}: {exc}", "Fix NEWSLETTER_DATABASE_URL."),
            skipped,
        ]
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        schema = _schema(engine)
        checks = [Check("database", True, f"{shown} reachable"), schema]
        if schema.ok:
            checks.append(_console(engine, settings))
        return checks
    except SQLAlchemyError as exc:
        fix = "Check NEWSLETTER_DATABASE_URL (host, port, user, password) and that the server runs."
        return [Check("database", False, f"can't connect to {shown}: {_reason(exc)}", fix), skipped]
    finally:
        engine.dispose()


def _console(engine: Engine, settings: Settings) -> Check:
    """Whether anyone can sign in to /console: an admin with a password set."""
    with Session(engine) as session:
        users = session.exec(select(User).where(col(User.disabled).is_(False))).all()
    admins = [u for u in users if u.role == "admin" and u.password_hash]
    if not admins:
        return Check(
            "console",
            None,
            "no console admin yet: nobody can sign in to /console",
            "Run `newsletter user add you@example.com --role admin` and open the link it prints.",
        )
    base = urlsplit(settings.base_url)
    if base.scheme != "https" and base.hostname not in ("127.0.0.1", "localhost", "::1"):
        return Check(
            "console",
            None,
            "sign-in over http: passwords and the session cookie would cross the network in clear",
            "Serve over https (NEWSLETTER_BASE_URL).",
        )
    return Check(
        "console",
        True,
        f"{len(users)} user(s), {len(admins)} admin(s); at {settings.base_url}/console",
    )


def _schema(engine: Engine) -> Check:
    try:
        current, head = current_revision(engine), head_revision(engine)
    except SQLAlchemyError as exc:
        return Check("schema", False, f"can't read the migration level: {_reason(exc)}")
    if current == head:
        return Check("schema", True, f"at the head revision {head}")
    upgrade = "Run `newsletter db upgrade` (back up the database first)."
    if current is None:
        summary = f"empty (no migrations applied); code expects {head}"
        return Check("schema", False, summary, upgrade)
    from alembic.script import ScriptDirectory  # only here: a command never loads Alembic

    try:
        ScriptDirectory.from_config(alembic_config(engine)).get_revision(current)
    except Exception:  # alembic raises several kinds for an unknown revision
        summary = f"at revision {current}, which this code does not know (migrated by a newer one?)"
        fix = "Run the engine version that migrated it, or point NEWSLETTER_DATABASE_URL elsewhere."
        return Check("schema", False, summary, fix)
    return Check("schema", False, f"at revision {current}, code expects {head}", upgrade)


def _reason(exc: SQLAlchemyError) -> str:
    """The driver's own words on one line, without SQLAlchemy's SQL echo and links."""
    reason = exc.orig if isinstance(exc, DBAPIError) else exc
    return " ".join(str(reason).split())
