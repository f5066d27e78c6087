"""Per-client limits for public forms: a sliding window of recent hits per key (client IP).

In-process: each web process counts on its own, which is enough to stop a script hammering
the form through one process and costs no database write. Behind several processes the
effective limit is the sum; the confirmation email itself is limited per address in the
database (``subscriptions.CONFIRM_INTERVAL``), which is what protects the people addressed.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable


def client_key(host: str, ipv6_prefix: int = 64) -> str:
    """The key a client is counted under: an IPv4 address as is, an IPv6 address by its
    network (``/64`` by default: one subscriber line gets a whole /64, so keying on the full
    address let 20 addresses of one /64 post 200 signups)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, ipv6_prefix), strict=False))
    return str(address)


class SlidingWindow:
    """At most ``limit`` hits per ``window`` seconds per key; remembers ``max_keys`` keys."""

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        max_keys: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._clock = clock
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def full(self, key: str) -> bool:
        """Whether ``key`` is at its limit now (nothing counted)."""
        now = self._clock()
        with self._lock:
            hits = self._hits.get(key)
            return hits is not None and sum(1 for t in hits if t > now - self.window) >= self.limit

    def allow(self, key: str) -> bool:
        """Count a hit for ``key``; False (and not counted) if it is over the limit."""
        now = self._clock()
        with self._lock:
            hits = self._hits.get(key)
            if hits is None:
                hits = self._hits[key] = deque()
                if len(self._hits) > self.max_keys:
                    self._hits.popitem(last=False)  # forget the least recently seen client
            else:
                self._hits.move_to_end(key)
            while hits and hits[0] <= now - self.window:
                hits.popleft()
            if len(hits) >= self.limit:
                return False
            hits.append(now)
            return True
