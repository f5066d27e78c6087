"""Knowing when an HTTP request has left in full: the hand-over point of an email API.

``requests`` can't say whether a request that was interrupted reached the provider. urllib3
writes the whole request (line, headers, body) before it asks for the response, so a
connection that runs a hook as ``getresponse`` starts marks the moment from which the provider
may act on the request whatever happens to this process: the same point as the end-of-data
dot in SMTP. :class:`HandoverAdapter` mounts such connections on a ``requests.Session``;
:func:`on_written` sets the hook for the requests made inside it (a context variable, so it
follows the calling thread and never leaks to another request).

Nothing else changes: no retries are added, TLS and proxies work as with the default adapter
(through a proxy the hook runs too; an HTTPS proxy's CONNECT is not the request itself).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import PoolManager

from newsletter.backends.base import HandoverError

_written: ContextVar[Callable[[], None] | None] = ContextVar("request_written", default=None)


@contextmanager
def on_written(hook: Callable[[], None] | None) -> Iterator[None]:
    """Run ``hook`` once, when the request made inside this block has been written in full.

    An exception from the hook becomes :class:`HandoverError` (urllib3 would take an
    ``OSError`` for a network failure and the caller would misread it)."""
    token = _written.set(hook)
    try:
        yield
    finally:
        _written.reset(token)


def _fire() -> None:
    hook = _written.get()
    if hook is None:
        return
    _written.set(None)  # once per block: a redirect's second request is not another hand-over
    try:
        hook()
    except Exception as exc:
        raise HandoverError(f"recording the hand-over failed: {exc}") from exc


class _Connection(HTTPConnection):
    def getresponse(self) -> Any:
        _fire()
        return super().getresponse()


class _TLSConnection(HTTPSConnection):
    def getresponse(self) -> Any:
        _fire()
        return super().getresponse()


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Connection


class _TLSPool(HTTPSConnectionPool):
    ConnectionCls = _TLSConnection


def _use_our_pools(manager: PoolManager) -> PoolManager:
    manager.pool_classes_by_scheme = {"http": _Pool, "https": _TLSPool}
    return manager


class HandoverAdapter(HTTPAdapter):
    """``HTTPAdapter`` whose connections run the :func:`on_written` hook."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        _use_our_pools(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> PoolManager:
        manager: PoolManager = super().proxy_manager_for(proxy, **proxy_kwargs)
        return _use_our_pools(manager)
