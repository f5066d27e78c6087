"""read_ahead: the same items in the same order, errors where they happened, no thread left."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from newsletter.audience.readahead import read_ahead


def test_every_item_comes_in_order() -> None:
    assert list(read_ahead(iter(range(10_000)))) == list(range(10_000))
    assert list(read_ahead([])) == []


def test_the_producer_runs_at_most_depth_items_ahead() -> None:
    produced: list[int] = []

    def source() -> Iterator[int]:
        for i in range(50):
            produced.append(i)
            yield i

    for taken in read_ahead(source(), depth=2):
        # the producer may hold one item it could not hand over yet, besides the queue's two
        assert len(produced) <= taken + 1 + 2 + 1


def test_an_error_in_the_producer_is_raised_where_its_item_would_come() -> None:
    def source() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("line 3: bad")

    seen: list[int] = []
    with pytest.raises(ValueError, match="line 3: bad"):
        for item in read_ahead(source()):
            seen.append(item)
    assert seen == [1, 2]


def test_a_consumer_that_stops_early_stops_the_producer() -> None:
    reads: list[int] = []

    def source() -> Iterator[int]:
        for i in range(1_000_000):
            reads.append(i)
            yield i

    before = threading.active_count()
    with pytest.raises(RuntimeError):
        for item in read_ahead(source()):
            if item == 3:
                raise RuntimeError("the database failed")
    assert threading.active_count() == before  # joined, not left running
    done = len(reads)
    assert done < 10
    time.sleep(0.3)
    assert len(reads) == done  # nothing is read after the consumer returned


def test_a_depth_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        next(read_ahead(iter([1]), depth=0))  # a queue of size 0 would be unbounded
