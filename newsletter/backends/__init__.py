"""Mail backends, found by URL scheme through the ``newsletter.backends`` entry-point group.

The built-in backends register there too (see ``pyproject.toml``), so a third-party package
adds one with ``[project.entry-points."newsletter.backends"] myapi = "pkg.module:Class"``.
Everything a backend needs is exported here (the message it is handed included), so a plugin
imports this package and :mod:`newsletter.testing` only.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from importlib.metadata import entry_points
from urllib.parse import urlsplit

from newsletter.backends.base import (
    BackendError,
    MailBackend,
    ProbeResult,
    SendResult,
    SendStatus,
    flag,
    query_options,
)
from newsletter.backends.failover import FailoverBackend
from newsletter.edition.message import OutgoingMessage

ENTRY_POINT_GROUP = "newsletter.backends"

__all__ = [
    "BackendError",
    "MailBackend",
    "OutgoingMessage",
    "ProbeResult",
    "SendResult",
    "SendStatus",
    "available_schemes",
    "flag",
    "query_options",
    "backend_factory",
    "backend_from_url",
]


def available_schemes() -> list[str]:
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def backend_from_url(url: str) -> MailBackend:
    """The backend for ``url``, e.g. ``smtp://host:25`` or ``file:///srv/outbox``.

    Several URLs separated by spaces make a :class:`FailoverBackend` trying them in order.
    """
    return _maker(url)()


def backend_factory(url: str) -> Callable[[], MailBackend]:
    """A function making a new backend for ``url`` each call, as :func:`backend_from_url` does.

    The scheme's entry point is looked up on the first call and kept, so a send that opens a
    backend per sender (up to 16), or a web process that opens one per confirmation mail,
    does not scan every installed package's metadata each time (about 7 ms of CPU a lookup
    here). Nothing is checked before that first call: a caller that wants a bad URL refused
    before it starts anything calls the function once (the CLI does); the web app does not,
    so a typo in the mail backend stops confirmation mails, never unsubscribe links."""
    resolved: list[Callable[[], MailBackend]] = []

    def make() -> MailBackend:
        if not resolved:
            resolved.append(_maker(url))
        return resolved[0]()

    return make


def _maker(url: str) -> Callable[[], MailBackend]:
    """The URL's scheme checked and its entry point loaded: a function building the backend
    (whose own checks of the URL run in each call)."""
    urls = url.split()
    if len(urls) > 1:
        parts = [_maker(u) for u in urls]
        return lambda: FailoverBackend([make() for make in parts])
    url = urls[0] if urls else ""
    try:
        scheme = urlsplit(url).scheme.lower()
        urlsplit(url).port  # noqa: B018  (raises on a malformed netloc)
    except ValueError:
        # urllib's message may quote part of the password: say what to do, not what it saw.
        raise BackendError(
            "mail backend URL can't be parsed; percent-encode special characters "
            "(such as [ ] @ : / in the password)"
        ) from None
    if not scheme:
        # Never echo the URL: it may carry a password.
        raise BackendError("mail backend URL has no scheme, e.g. smtp:// or file://")
    matches = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == scheme]
    if not matches:
        known = ", ".join(f"{s}://" for s in available_schemes()) or "none (is it installed?)"
        raise BackendError(f"no mail backend for {scheme}://; installed: {known}")
    cls = matches[0].load()
    if not (isinstance(cls, type) and issubclass(cls, MailBackend)):
        raise BackendError(f"entry point {scheme} does not name a MailBackend subclass")
    return partial(cls.from_url, url)
