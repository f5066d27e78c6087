"""The ``newsletter`` command: thin Typer commands over ``publish`` and the importers.

Every command reads settings from the environment (``NEWSLETTER_*``, or a ``.env`` file), prints
a readable error and exits 1 when something is wrong, and never prints a secret. One module per
group of commands; importing this package registers them all on :data:`app`.
"""

from __future__ import annotations

from newsletter.allocator import keep_freed_memory
from newsletter.cli import content, demo, editions, operations, scheduling  # noqa: F401 (register)
from newsletter.cli.common import app

__all__ = ["app", "main"]


def main() -> None:
    keep_freed_memory()
    app()
