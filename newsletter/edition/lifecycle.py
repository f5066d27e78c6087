"""An edition's state machine: its states' moves as data, and why a move is refused.

Every change of an edition's status goes through :func:`newsletter.storage.store.transition`, a
conditional UPDATE that names the states it may start from (compare-and-set), so two people or
processes acting at once can't undo each other: a cancel that lands first makes a later
error-budget pause a no-op instead of being overwritten by it, and ``resume`` can then never
restart a cancelled edition. Pure: no database, no clock.

    draft --start--> sending --finish--> sent --reopen (retry-failed)--> sending
    sending --pause--> paused --resume--> sending
    draft | sending | paused --cancel--> cancelled (final)
"""

from __future__ import annotations

from dataclasses import dataclass

from newsletter.errors import NewsletterError
from newsletter.storage.models import EditionStatus


class EditionStateError(NewsletterError, RuntimeError):
    """The edition is not in a state that allows this action (the message says which)."""


@dataclass(frozen=True, slots=True)
class Move:
    sources: frozenset[EditionStatus]
    target: EditionStatus
    #: The history's word for it (an EditionEvent action).
    event: str


_D, _SG, _P, _ST, _C = (
    EditionStatus.draft,
    EditionStatus.sending,
    EditionStatus.paused,
    EditionStatus.sent,
    EditionStatus.cancelled,
)

MOVES: dict[str, Move] = {
    "start": Move(frozenset({_D}), _SG, "started"),
    "pause": Move(frozenset({_SG}), _P, "paused"),
    "resume": Move(frozenset({_P}), _SG, "resumed"),
    "cancel": Move(frozenset({_D, _SG, _P}), _C, "cancelled"),
    "finish": Move(frozenset({_SG}), _ST, "sent"),
    "reopen": Move(frozenset({_ST}), _SG, "reopened"),
}

#: Editions that hold their comparisons: everything but a cancelled one.
LIVE = frozenset({_D, _SG, _P, _ST})


def refusal(edition_id: int, action: str, current: str) -> str:
    """One line: what the edition is, and from which states ``action`` is possible."""
    move = MOVES[action]
    allowed = ", ".join(sorted(s.value for s in move.sources))
    return f"edition {edition_id} is {current}; can't {action} it (only from {allowed})"
