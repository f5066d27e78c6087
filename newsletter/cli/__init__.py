"""The ``newsletter`` command: thin Typer commands over ``publish`` and the importers.

Every command reads settings from the environment (``NEWSLETTER_*``, or a ``.env`` file), prints
a readable error and exits 1 when something is wrong, and never prints a secret. One module per
group of commands; importing this package registers them all on :data:`app`.
"""

from __future__ import annotations

from typing import Any

import typer

from newsletter.allocator import keep_freed_memory
from newsletter.cli import (  # noqa: F401 (register)
    bounces,
    content,
    demo,
    dkim,
    editions,
    ledger,
    operations,
    scheduling,
    users,
    writing,
)
from newsletter.cli.common import HELP, app

__all__ = ["app", "main"]


def command() -> Any:
    """The Click command tree of :data:`app`, with flags shown as flags in ``--help``.

    Typer 0.29 prints a type beside every option, so ``--wait`` read ``--wait <bool>`` as if it
    took a value; a flag's type is left blank instead.
    """
    root = typer.main.get_command(app)
    pending = [root]
    while pending:
        current = pending.pop()
        pending.extend(getattr(current, "commands", {}).values())
        # The help option is made on first use and cached; make it now to blank it too.
        context = current.context_class(current, help_option_names=HELP["help_option_names"])
        help_option = current.get_help_option(context)
        for param in [*current.params, *([help_option] if help_option else [])]:
            if getattr(param, "is_flag", False):
                param.metavar = ""
    return root


def main() -> None:
    keep_freed_memory()
    command()(prog_name="newsletter")
