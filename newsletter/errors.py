"""The root of every error a person can fix, so every entry point reports them one way.

A :class:`NewsletterError` carries a message that names the input and what is allowed, in one
line; ``problems`` when a file had several (an import, the schedule files), each naming its
record and field; an optional ``hint`` (how to fix it, when the message does not already say);
and the CLI's ``exit_code``. The CLI prints the problems, then the headline in red, and exits
with the code, never with a traceback; the console shows the same text. Everything else
(a bug, a lost database) is not one of these and keeps its traceback for the logs.

Each stage keeps its own subclass (``ImportRejected``, ``BackendError``, ``RenderError``...),
most also deriving from the builtin they always were (``ValueError``, ``LookupError``...), so
callers that catch those still do. As anymail's ``AnymailError``: one root, many causes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar


class NewsletterError(Exception):
    """An error in what a person gave (a file, a setting, a command) or asked for."""

    #: The CLI's exit status for this error (2 is the shell's "usage" code, typer's own).
    exit_code: ClassVar[int] = 1
    #: How to fix it, when the message does not say; shown on its own line.
    hint: str | None = None
    #: Every problem found, when there were several; the message then sums them up.
    problems: Sequence[str] = ()

    def headline(self) -> str:
        """The one line the CLI prints last, in red (the message itself by default)."""
        return str(self)
