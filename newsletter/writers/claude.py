"""The Claude writer: the official ``anthropic`` SDK, Messages API, streamed tool use.

The verdict comes back as the input of the ``record_verdict`` tool (``tool_choice`` forces
it), so the answer is JSON in the verdict's schema, not prose to parse; the week's intro
comes back through ``record_intro`` the same way. The call streams: each
``input_json`` event carries the next piece of the tool's arguments, which ``on_delta``
receives as it arrives (the console shows them). Prompt caching: the tools and the system
instructions come first and never change (both tools are on every request, so verdicts and
intros share the prefix); the ``cache_control`` breakpoint on the system block caches both,
and the comparison (or the edition) follows in the user turn. The usage of every response
(input, output, cache-creation and cache-read tokens) is returned with the answer.

Optional: ``pip install '.[ai]'``; nothing imports this module unless the writer is chosen.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from newsletter.edition.content import ComparisonData
from newsletter.edition.verdicts import ComparisonVerdict
from newsletter.writers import grounding
from newsletter.writers.contract import (
    INTRO_TOOL,
    TOOLS,
    VERDICT_TOOL,
    Usage,
    WriterError,
    Written,
)
from newsletter.writers.prompt import INSTRUCTIONS, comparison_block, edition_block

NAME = "claude"
DEFAULT_MODEL = "claude-sonnet-4-5"


def request_of(content: str, *, tool: str, model: str, max_tokens: int) -> dict[str, Any]:
    """The Messages API request: the stable prefix (both tools, then the system block with
    the cache breakpoint), then ``content`` (a comparison or an edition, as data), with
    ``tool`` the one the answer must call."""
    return {
        "model": model,
        "max_tokens": max_tokens,
        "system": [{"type": "text", "text": INSTRUCTIONS, "cache_control": {"type": "ephemeral"}}],
        "tools": list(TOOLS),
        "tool_choice": {"type": "tool", "name": tool},
        "messages": [{"role": "user", "content": content}],
    }


class ClaudeWriter:
    """Writes verdicts and intros through Claude; one client, reused across calls."""

    name = NAME

    def __init__(
        self,
        *,
        api_key: str,
        model: str = DEFAULT_MODEL,
        base_url: str | None = None,
        max_tokens: int = 1024,
        timeout: float = 60.0,
        max_retries: int = 2,
    ) -> None:
        try:
            import anthropic
        except ImportError:  # pragma: no cover - depends on the install
            raise WriterError(
                "the claude writer needs the anthropic package: pip install '.[ai]'"
            ) from None
        if not api_key:
            raise WriterError("the claude writer needs an API key: set ANTHROPIC_API_KEY")
        self._anthropic = anthropic
        self.model = model
        self.max_tokens = max_tokens
        self._client = anthropic.Anthropic(
            api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries
        )

    def write(
        self, comparison: ComparisonData, *, on_delta: Callable[[str], None] | None = None
    ) -> Written:
        """One streamed call for a comparison's verdict. The answer is checked
        (:func:`grounding.check`): one that fails comes back with ``verdict=None`` and the
        reason; a service failure raises :class:`WriterError` (status and the service's own
        words, never the key)."""
        answer, base = self._ask(comparison_block(comparison), VERDICT_TOOL["name"], on_delta)
        return grounding.settle(answer, base, lambda a: {"verdict": grounding.check(comparison, a)})

    def write_intro(
        self,
        verdicts: Sequence[ComparisonVerdict],
        *,
        on_delta: Callable[[str], None] | None = None,
    ) -> Written:
        """One streamed call for the week's intro, checked by :func:`grounding.check_intro`."""
        answer, base = self._ask(edition_block(verdicts), INTRO_TOOL["name"], on_delta)
        return grounding.settle(
            answer, base, lambda a: {"intro": grounding.check_intro(verdicts, a)}
        )

    def _ask(
        self, content: str, tool: str, on_delta: Callable[[str], None] | None
    ) -> tuple[Any, Written]:
        """(the tool's input, or None with the refusal in the Written, and the Written with
        the usage and latency)."""
        started = time.monotonic()
        api = self._anthropic
        request = request_of(content, tool=tool, model=self.model, max_tokens=self.max_tokens)
        opened = False  # the answer had begun: a transport error now cut the stream
        try:
            with self._client.messages.stream(**request) as stream:
                opened = True
                for event in stream:
                    if event.type == "input_json" and on_delta is not None:
                        on_delta(event.partial_json)
                final = stream.get_final_message()
        except api.APIStatusError as exc:
            raise WriterError(f"claude: HTTP {exc.status_code}: {_message(exc)}") from None
        except api.APITimeoutError:
            raise WriterError("claude: the request timed out") from None
        except api.APIConnectionError as exc:
            # anthropic 2.17 wraps a transport error inside the body in this one too.
            what = "the stream broke off" if opened else "connection failed"
            raise WriterError(f"claude: {what} ({type(exc.__cause__).__name__})") from None
        except api.APIError as exc:  # e.g. an error event inside the stream
            raise WriterError(f"claude: {exc.message}") from None
        except Exception as exc:  # the transport's own error: the stream broke off mid-body
            raise WriterError(f"claude: the stream broke off ({type(exc).__name__})") from None
        usage = Usage(
            input_tokens=final.usage.input_tokens,
            output_tokens=final.usage.output_tokens,
            cache_creation_tokens=final.usage.cache_creation_input_tokens or 0,
            cache_read_tokens=final.usage.cache_read_input_tokens or 0,
        )
        base = Written(
            NAME, self.model, None, None, usage, None, int((time.monotonic() - started) * 1000)
        )
        calls = [b for b in final.content if b.type == "tool_use" and b.name == tool]
        if final.stop_reason != "tool_use":  # the stream ended before the answer did
            return None, replace(
                base, refusal=f"the answer was cut off (stop reason {final.stop_reason})"
            )
        if not calls:
            return None, replace(base, refusal=f"the answer did not call {tool}")
        answer = calls[0].input
        return answer, replace(base, raw=json.dumps(answer, ensure_ascii=False))


def _message(exc: Any) -> str:
    """The service's own error message (its JSON ``error.message``), short."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])[:200]
    return str(getattr(exc, "message", "") or type(exc).__name__)[:200]
