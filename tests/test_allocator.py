"""The allocator tuning the CLI applies is real on this (glibc) platform."""

from __future__ import annotations

import platform

from newsletter.allocator import keep_freed_memory


def test_keep_freed_memory_applies_on_glibc() -> None:
    applied = keep_freed_memory(8 * 1024 * 1024)
    if platform.libc_ver()[0] == "glibc":
        assert applied is True
    else:
        assert applied is False
