"""Engines, sessions and schema migrations.

The engine is built by :func:`make_engine` when a command needs it, never at import time.
SQLite gets WAL, ``synchronous=NORMAL``, foreign keys and a busy timeout, because the send loop
commits once per batch while a web process may read.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError
from sqlmodel import Session, create_engine

from newsletter.config import ConfigError
from newsletter.errors import NewsletterError

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


class SchemaOutOfDate(NewsletterError, RuntimeError):
    """The database is not at the head migration."""


class DatabaseUnusable(ConfigError):
    """NEWSLETTER_DATABASE_URL can't be used as given: a SQLite file that does not exist (for a
    command that must not create one), a port that is not a number, a driver not installed."""


def make_engine(url: str, *, create: bool = True) -> Engine:
    """An engine for ``url``.

    A SQLite file that does not exist is created only with ``create`` (``db upgrade``,
    ``demo``, ``run``, tests): its folder 0700 and the file 0600, because it holds subscribers
    and the tokens in their links. Every other command passes ``create=False`` and is told
    where it looked, instead of leaving an empty database behind a typo.
    """
    try:
        parsed = make_url(url)
        parsed.port  # noqa: B018 - parsed lazily: a port that is not a number fails here
    except (ValueError, ArgumentError) as exc:
        raise DatabaseUnusable(
            "NEWSLETTER_DATABASE_URL is not a valid database URL (the port must be a number, "
            f"e.g. postgresql://user@host:5432/db): {type(exc).__name__}"
        ) from None
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            _sqlite_file(Path(parsed.database).expanduser(), create=create)
        kwargs["connect_args"] = {"timeout": 30}
    elif parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        # psycopg 3 is the driver we ship; a bare postgresql:// URL would ask for psycopg2.
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    try:
        engine = create_engine(url, **kwargs)
    except ImportError as exc:
        raise DatabaseUnusable(
            f"NEWSLETTER_DATABASE_URL needs the {exc.name} driver, which is not installed: "
            "pip install 'newsletter-engine[postgres]' (psycopg 3) for PostgreSQL"
        ) from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_file(path: Path, *, create: bool) -> None:
    if path.exists():
        return
    if not create:
        raise DatabaseUnusable(
            f"no database at {path.resolve()} (NEWSLETTER_DATABASE_URL): run "
            "`newsletter db upgrade` to create it there, or fix the path"
        )
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that the caller commits; rolled back if the block raises."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
        except BaseException:
            reset_session(session)
            raise


def connection_lost(exc: BaseException) -> str | None:
    """The driver's first line when ``exc`` means the database went away or can't be reached
    (a restart, a network cut, too many clients, a locked SQLite file), else None.

    These are the errors a long-running process waits out instead of dying: the operation
    that met one was rolled back by the server, so trying it again is safe.
    """
    if not isinstance(exc, DBAPIError):
        return None
    if not (exc.connection_invalidated or isinstance(exc, (OperationalError, InterfaceError))):
        return None
    text = str(exc.orig if exc.orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def reset_session(session: Session) -> None:
    """Roll ``session`` back after an error, even when its connection is dead.

    A rollback on a connection the server cut raises itself (psycopg: "the connection is
    closed"); closing the session then returns the connection to the pool, which discards it,
    and the session opens a fresh one on its next use.
    """
    try:
        session.rollback()
    except Exception:
        session.close()


#: The newest migration. Commands check the schema against this constant instead of loading
#: Alembic and every migration script (6.4 MiB of memory in every process, a send's senders
#: included); ``tests/test_migrations.py`` checks that it is Alembic's head.
SCHEMA_HEAD = "0024"


def alembic_config(engine: Engine) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database to ``revision`` (default: head). Safe to run on an empty database."""
    from alembic import command

    command.upgrade(alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None: never migrated), read from Alembic's table."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def head_revision(engine: Engine) -> str | None:
    """Alembic's head, from the migration scripts (slow: for tests and doctor)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


def require_head(engine: Engine) -> None:
    """Raise :class:`SchemaOutOfDate` with the fix if migrations are missing."""
    current, head = current_revision(engine), SCHEMA_HEAD
    if current != head:
        raise SchemaOutOfDate(
            f"database {engine.url.render_as_string(hide_password=True)} is at revision "
            f"{current or 'none (empty)'}, code expects {head}: run `newsletter db upgrade`"
        )
