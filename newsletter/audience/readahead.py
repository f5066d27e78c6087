"""Run an iterator in a background thread, a bounded number of items ahead of its consumer.

The subscriber import parses a chunk of lines in Python (about 9 us a line) and then waits
for the database to write it (PostgreSQL's COPY, index and foreign-key work: most of the
time). Waiting on a socket or in SQLite releases the GIL, so the next chunk can be parsed in
that time instead of after it.
"""

from __future__ import annotations

import enum
import queue
import threading
from collections.abc import Generator, Iterable
from typing import TypeVar

T = TypeVar("T")


class _Done(enum.Enum):
    """The end of the items: an enum member, so that ``is`` tells a type checker it is not T."""

    DONE = enum.auto()


_DONE = _Done.DONE


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def read_ahead(items: Iterable[T], *, depth: int = 1) -> Generator[T, None, None]:
    """``items`` in order, produced by a thread at most ``depth`` items ahead.

    An exception the producer raises is raised here, where the item would have come. When
    the consumer stops early (an exception, ``break``, or the generator closed), the producer
    is told to stop at its next item and is waited for, so no thread outlives the call and
    nothing reads the source after the consumer has returned.
    """
    if depth < 1:
        raise ValueError(f"depth must be at least 1, not {depth}")  # 0 would mean unbounded
    handoff: queue.Queue[T | _Failed | _Done] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: T | _Failed | _Done) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer(item):
                    return
        except BaseException as exc:  # handed over, raised in the consumer's thread
            offer(_Failed(exc))
            return
        offer(_DONE)

    thread = threading.Thread(target=produce, name="read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = handoff.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()
