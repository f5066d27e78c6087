"""The first line each address was seen on, in 20 bytes an address.

The subscriber import reports a repeated address as ``duplicate of line N``, so it must
remember every address of the file with the line it came on. A ``dict[str, int]`` costs about
140 bytes an entry (the string, the int, the table): 140 MiB for a million-line list, more than
the rest of the import together. This table keeps a 96-bit BLAKE2b fingerprint of each key and
its line in three flat arrays (open addressing, linear probing, at most two thirds full), so a
million addresses take 40 MiB.

Two different keys would be taken for one only if their 96-bit fingerprints were equal: for a
million keys the chance is about 1 in 10^17 (n²/2^97), far below the chance of a memory error,
so the answer is exact for every list this engine will see.
"""

from __future__ import annotations

from array import array
from hashlib import blake2b

#: The table is doubled before it is more than this full (linear probing stays short).
_MOST_FULL = 2 / 3


class FirstSeen:
    """``first(key, line)``: the line ``key`` was first seen on, or None the first time."""

    __slots__ = ("_check", "_fingerprints", "_lines", "_mask", "_size")

    def __init__(self, expected: int = 0) -> None:
        """``expected``: about how many keys will come (the table is sized once for them)."""
        slots = 1 << 10
        while slots * _MOST_FULL < expected:
            slots <<= 1
        self._allocate(slots)
        self._size = 0

    def _allocate(self, slots: int) -> None:
        self._fingerprints = array("Q", bytes(8 * slots))  # 0 marks an empty slot
        self._check = array("I", bytes(4 * slots))
        self._lines = array("Q", bytes(8 * slots))
        self._mask = slots - 1

    def __len__(self) -> int:
        return self._size

    def first(self, key: str, line: int) -> int | None:
        """The line ``key`` was first seen on; None (and ``line`` remembered) if never."""
        digest = blake2b(key.encode(), digest_size=12).digest()
        fingerprint = int.from_bytes(digest[:8], "little") or 1
        check = int.from_bytes(digest[8:], "little")
        fingerprints, mask = self._fingerprints, self._mask
        slot = fingerprint & mask
        while True:
            found = fingerprints[slot]
            if found == 0:
                break
            if found == fingerprint and self._check[slot] == check:
                return self._lines[slot]
            slot = (slot + 1) & mask
        fingerprints[slot] = fingerprint
        self._check[slot] = check
        self._lines[slot] = line
        self._size += 1
        if self._size > (mask + 1) * _MOST_FULL:
            self._grow()
        return None

    def _grow(self) -> None:
        """Twice the slots; every entry moved by its stored fingerprint (no key rehashed)."""
        old = (self._fingerprints, self._check, self._lines)
        self._allocate(2 * (self._mask + 1))
        fingerprints, check, lines, mask = self._fingerprints, self._check, self._lines, self._mask
        for fingerprint, checked, line in zip(*old, strict=True):
            if not fingerprint:
                continue
            slot = fingerprint & mask
            while fingerprints[slot]:
                slot = (slot + 1) & mask
            fingerprints[slot] = fingerprint
            check[slot] = checked
            lines[slot] = line
