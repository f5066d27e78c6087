"""The compact table of addresses seen: the same answers as a dict, through every growth."""

from __future__ import annotations

import random

from newsletter.audience.firstseen import FirstSeen


def test_the_first_line_is_remembered_and_later_ones_are_not() -> None:
    seen = FirstSeen()
    assert seen.first("a@example.org", 2) is None
    assert seen.first("b@example.org", 3) is None
    assert seen.first("a@example.org", 7) == 2
    assert seen.first("a@example.org", 9) == 2  # still the first, not the last repeat
    assert seen.first("A@example.org", 10) is None  # keys are compared exactly
    assert len(seen) == 3


def test_it_answers_as_a_dict_does_through_every_growth() -> None:
    """From the smallest table to 65,536 slots (six doublings), with repeats and near-twins."""
    rng = random.Random(20261204)
    keys = [f"reader{i}@mail{i % 97}.example.org" for i in range(40_000)]
    keys += [k.upper() for k in keys[:500]] + ["", "x" * 300, "ü@é.example"]
    stream = [rng.choice(keys) for _ in range(60_000)]
    seen, expected = FirstSeen(), dict[str, int]()
    for line, key in enumerate(stream, start=2):
        assert seen.first(key, line) == expected.get(key), (line, key)
        expected.setdefault(key, line)
    assert len(seen) == len(expected)
    for key, line in expected.items():  # every entry survived the moves
        assert seen.first(key, 10**12) == line


def test_a_table_sized_up_front_never_grows_and_takes_big_line_numbers() -> None:
    seen = FirstSeen(expected=3_000)
    slots = len(seen._fingerprints)
    for i in range(3_000):
        assert seen.first(str(i), 4_000_000_000 + i) is None
    assert len(seen._fingerprints) == slots  # sized once: no copy while importing
    assert seen.first("2999", 1) == 4_000_000_000 + 2_999
