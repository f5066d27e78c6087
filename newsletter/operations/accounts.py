"""Console accounts: users with a role, argon2id passwords, one-time set-password links and
server-side sessions.

Nothing secret is stored in a form that opens anything: a session cookie and a set-password
link are random tokens of which only the SHA-256 is kept, and passwords are argon2id hashes
(argon2-cffi's defaults). A session ends after :data:`IDLE` without a request, after
:data:`ABSOLUTE` in any case, or at logout. Time is a parameter everywhere; only the web
request and the CLI read the clock.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING

from sqlalchemy import delete
from sqlmodel import Session, col, select

from newsletter.audience.addresses import AddressError, normalize_email
from newsletter.errors import NewsletterError
from newsletter.operations.passwords import weakness
from newsletter.storage.models import ConsoleSession, PasswordLink, Role, User

if TYPE_CHECKING:
    from argon2 import PasswordHasher

#: A session unused this long is over.
IDLE = timedelta(hours=8)
#: A session is over this long after sign-in, used or not.
ABSOLUTE = timedelta(days=7)
#: A set-password link works this long, once.
LINK_TTL = timedelta(hours=48)
#: ``seen_at`` is written at most this often (not on every request).
TOUCH_EVERY = timedelta(minutes=1)

#: What each role may do in the console (admins may do everything).
PERMISSIONS: dict[str, frozenset[Role]] = {
    "view": frozenset(Role),
    "drafts": frozenset({Role.editor, Role.admin}),
    "sends": frozenset({Role.operator, Role.admin}),
    "schedules": frozenset({Role.operator, Role.admin}),
    "subscribers": frozenset({Role.operator, Role.admin}),
    "users": frozenset({Role.admin}),
}


@cache
def _hasher() -> PasswordHasher:
    """argon2-cffi's hasher, loaded on the first password: it is 4 MiB of every process
    otherwise, and only the console's sign-in and set-password paths use it."""
    from argon2 import PasswordHasher

    return PasswordHasher()


@cache
def _dummy_hash() -> str:
    """Verified against when the address is unknown, so a wrong address takes as long as a
    wrong password and the login does not tell which addresses have accounts."""
    return _hasher().hash(secrets.token_urlsafe(24))


class AccountError(NewsletterError, ValueError):
    """An account operation that can't be done; the message says why, for a person."""


@dataclass(frozen=True, slots=True)
class SignedIn:
    """The user behind a request, and their session's form token."""

    user: User
    csrf: str

    def can(self, action: str) -> bool:
        return can(self.user.role, action)


def can(role: str, action: str) -> bool:
    return role in PERMISSIONS.get(action, frozenset())


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def users(session: Session) -> list[User]:
    """Every console account, by address."""
    return list(session.exec(select(User).order_by(col(User.email))).all())


def find_user(session: Session, *, email: str) -> User:
    """The account with this address (any case); :class:`AccountError` naming it if none."""
    user = session.exec(select(User).where(User.email == email.strip().lower())).first()
    if user is None:
        raise AccountError(f"no user {email!r} (`newsletter user add` makes one)")
    return user


def add_user(session: Session, *, email: str, role: str, now: datetime) -> tuple[User, str]:
    """A new user without a password, and the token of their set-password link."""
    try:
        address, key = normalize_email(email)
    except AddressError as exc:
        raise AccountError(f"email: {exc}") from None
    if role not in Role.__members__:
        raise AccountError(f"role: {role!r} is not one of {', '.join(Role.__members__)}")
    if session.exec(select(User).where(User.email == key)).first() is not None:
        raise AccountError(f"a user {key} already exists (`newsletter user link {key}`)")
    user = User(email=key, role=role)
    session.add(user)
    session.flush()
    return user, password_link(session, user=user, now=now)


def password_link(session: Session, *, user: User, now: datetime) -> str:
    """A new one-time set-password token for ``user`` (earlier unused ones stop working)."""
    assert user.id is not None
    session.execute(delete(PasswordLink).where(col(PasswordLink.user_id) == user.id))
    token = secrets.token_urlsafe(32)
    session.add(
        PasswordLink(token_hash=token_hash(token), user_id=user.id, expires_at=now + LINK_TTL)
    )
    session.flush()
    return token


def link_user(session: Session, *, token: str, now: datetime) -> User | None:
    """The user a set-password link is for, if it is genuine, unused and unexpired."""
    link = session.get(PasswordLink, token_hash(token)) if len(token) < 200 else None
    if link is None or link.used_at is not None or link.expires_at <= now:
        return None
    return session.get(User, link.user_id)


def set_password(session: Session, *, token: str, password: str, now: datetime) -> User:
    """Use a set-password link: the password becomes the user's; every session ends."""
    user = link_user(session, token=token, now=now)
    if user is None or user.id is None:
        raise AccountError("this link is not valid any more; ask an admin for a new one")
    if problem := weakness(password):
        raise AccountError(f"password: {problem}")
    user.password_hash = _hasher().hash(password)
    link = session.get(PasswordLink, token_hash(token))
    assert link is not None
    link.used_at = now
    session.execute(delete(ConsoleSession).where(col(ConsoleSession.user_id) == user.id))
    session.flush()
    return user


def authenticate(session: Session, *, email: str, password: str) -> User | None:
    """The enabled user with this address and password, else None (same work either way)."""
    key = email.strip().lower()[:320]
    user = session.exec(select(User).where(User.email == key)).first()
    stored = user.password_hash if user is not None and user.password_hash else _dummy_hash()
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        _hasher().verify(stored, password[:1024])
    except (VerificationError, InvalidHashError):
        return None
    if user is None or user.disabled or not user.password_hash:
        return None
    return user


def open_session(session: Session, *, user: User, now: datetime) -> str:
    """Sign ``user`` in; the cookie's token."""
    assert user.id is not None
    token = secrets.token_urlsafe(32)
    session.add(
        ConsoleSession(
            token_hash=token_hash(token),
            user_id=user.id,
            csrf=secrets.token_urlsafe(32),
            created_at=now,
            seen_at=now,
        )
    )
    session.flush()
    return token


def load_session(session: Session, *, token: str, now: datetime) -> SignedIn | None:
    """Who a cookie belongs to, if its session is alive; an expired one is deleted."""
    if not token or len(token) > 200:
        return None
    row = session.get(ConsoleSession, token_hash(token))
    if row is None:
        return None
    user = session.get(User, row.user_id)
    if (
        user is None
        or user.disabled
        or row.seen_at + IDLE <= now
        or row.created_at + ABSOLUTE <= now
    ):
        session.delete(row)
        session.flush()
        return None
    if now - row.seen_at >= TOUCH_EVERY:
        row.seen_at = now
        session.flush()
    return SignedIn(user, row.csrf)


def close_session(session: Session, *, token: str) -> None:
    session.execute(
        delete(ConsoleSession).where(col(ConsoleSession.token_hash) == token_hash(token))
    )
    session.flush()
