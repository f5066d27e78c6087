"""The one place where the stages meet: draft, preview, approve and send an edition.

The CLI, the scheduler and the web app call these functions and nothing below them. Each takes
an open session and commits where a step is complete. ``drafting`` owns an edition's content,
``sending`` its start and its sends, ``controls`` the state changes people make in between.
"""

from newsletter.publish.approval import alert_editors, awaiting_approval, withdraw_approval
from newsletter.publish.controls import (
    EditionStateError,
    LiveEdition,
    approve_edition,
    cancel_edition,
    live_edition,
    live_editions,
    pause_edition,
    resume_edition,
    retry_failed,
    sending_editions,
    state_line,
    unknown_advice,
)
from newsletter.publish.drafting import (
    SAMPLE_RECIPIENT,
    ComparisonTaken,
    DraftOutcome,
    EmptyWeek,
    SubjectError,
    default_newsletter,
    draft_edition,
    prepare,
    preview_edition,
    resolve_newsletter,
    sender_of,
    set_subject,
    signer_for,
    size_note,
)
from newsletter.publish.dryrun import DryRunReport, SendPlan, dry_run, send_plan
from newsletter.publish.preflight import Check, preflight
from newsletter.publish.sending import (
    SendReport,
    policy_for,
    send_edition,
    start_edition,
)
from newsletter.publish.shaping import (
    ShapingError,
    drop_item,
    dropped_comparisons,
    move_item,
    restore_item,
    set_intro,
)
from newsletter.publish.testsend import MAX_TEST_ADDRESSES, TestSendError, send_test

__all__ = [
    "ShapingError",
    "drop_item",
    "dropped_comparisons",
    "move_item",
    "restore_item",
    "set_intro",
    "Check",
    "MAX_TEST_ADDRESSES",
    "TestSendError",
    "preflight",
    "send_test",
    "SubjectError",
    "set_subject",
    "size_note",
    "DryRunReport",
    "SendPlan",
    "dry_run",
    "send_plan",
    "LiveEdition",
    "live_edition",
    "live_editions",
    "ComparisonTaken",
    "DraftOutcome",
    "EditionStateError",
    "EmptyWeek",
    "SAMPLE_RECIPIENT",
    "SendReport",
    "approve_edition",
    "cancel_edition",
    "default_newsletter",
    "draft_edition",
    "pause_edition",
    "policy_for",
    "prepare",
    "preview_edition",
    "resolve_newsletter",
    "resume_edition",
    "retry_failed",
    "send_edition",
    "sender_of",
    "sending_editions",
    "signer_for",
    "start_edition",
    "withdraw_approval",
    "state_line",
    "unknown_advice",
    "alert_editors",
    "awaiting_approval",
]
