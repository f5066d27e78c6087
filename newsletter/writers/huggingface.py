"""The Hugging Face writer: ``huggingface_hub``'s ``InferenceClient`` over Inference
Providers, one provider per request (``provider=``), failing over down a list.

The providers are tried in the configured order (say groq, then together, then
fireworks-ai): a 429, a 5xx, a timeout or a lost connection moves on to the next; any other
refusal (a bad request, a model the provider does not serve) is the answer's fault or the
configuration's and stops there. The verdict comes back as the arguments of the
``record_verdict`` function (tools, which all three providers support; the SDK would rewrite
a JSON-schema ``response_format`` differently per provider), or as JSON content when a
model answers in text. The provider that answered and its latency are returned with it.
Given ``on_delta``, the call streams (``stream=True`` with ``include_usage``) and the
arguments are passed on as they arrive, as the Claude writer does.

The SDK looks the model up on the Hub (``/api/models/{id}?expand=inferenceProviderMapping``)
to learn each provider's own model id; ``endpoint`` and ``router`` point both at another host
(a test's stub, or a proxy).

Optional: ``pip install '.[ai]'``; nothing imports this module unless the writer is chosen.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, cast

from newsletter.edition.content import ComparisonData
from newsletter.edition.verdicts import ComparisonVerdict
from newsletter.writers import grounding
from newsletter.writers.contract import TOOLS, Usage, WriterError, Written
from newsletter.writers.prompt import INSTRUCTIONS, comparison_block, edition_block

NAME = "huggingface"
DEFAULT_MODEL = "meta-llama/Llama-3.3-70B-Instruct"
DEFAULT_PROVIDERS = ("groq", "together", "fireworks-ai")
_FUNCTIONS = [
    {
        "type": "function",
        "function": {
            "name": tool["name"],
            "description": tool["description"],
            "parameters": tool["input_schema"],
        },
    }
    for tool in TOOLS
]
_VERDICT, _INTRO = _FUNCTIONS


class HuggingFaceWriter:
    """Writes verdicts through Inference Providers, failing over between providers."""

    name = NAME

    def __init__(
        self,
        *,
        token: str,
        model: str = DEFAULT_MODEL,
        providers: Sequence[str] = DEFAULT_PROVIDERS,
        endpoint: str | None = None,
        router: str | None = None,
        timeout: float = 60.0,
        max_tokens: int = 1024,
    ) -> None:
        try:
            from huggingface_hub import InferenceClient, constants
        except ImportError:  # pragma: no cover - depends on the install
            raise WriterError(
                "the huggingface writer needs the huggingface_hub package: pip install '.[ai]'"
            ) from None
        if not token:
            raise WriterError("the huggingface writer needs a token: set NEWSLETTER_HF_TOKEN")
        if not providers:
            raise WriterError("the huggingface writer needs at least one provider")
        # The SDK reads both at call time; set here, when the writer is made, not at import.
        if endpoint:
            constants.ENDPOINT = endpoint.rstrip("/")
        if router:
            constants.INFERENCE_PROXY_TEMPLATE = router.rstrip("/") + "/{provider}"
        self.model = model
        self.max_tokens = max_tokens
        self.providers = tuple(providers)
        # cast: the SDK types ``provider`` as the closed Literal of the providers it knew at
        # release; ours are settings strings, and the SDK checks the name itself when called.
        self._clients = [
            (p, InferenceClient(provider=cast(Any, p), api_key=token, timeout=timeout))
            for p in self.providers
        ]

    def write(
        self, comparison: ComparisonData, *, on_delta: Callable[[str], None] | None = None
    ) -> Written:
        """Ask each provider in turn until one answers; the answer is checked like any
        writer's. Raises :class:`WriterError` listing each provider's failure when none does.
        With ``on_delta`` the call streams and it receives the arguments as they arrive."""
        answer, base = self._ask(comparison_block(comparison), _VERDICT, on_delta)
        return grounding.settle(answer, base, lambda a: {"verdict": grounding.check(comparison, a)})

    def write_intro(
        self,
        verdicts: Sequence[ComparisonVerdict],
        *,
        on_delta: Callable[[str], None] | None = None,
    ) -> Written:
        """The week's intro, asked and checked (:func:`grounding.check_intro`) the same way."""
        answer, base = self._ask(edition_block(verdicts), _INTRO, on_delta)
        return grounding.settle(
            answer, base, lambda a: {"intro": grounding.check_intro(verdicts, a)}
        )

    def _ask(
        self, content: str, tool: dict[str, Any], on_delta: Callable[[str], None] | None
    ) -> tuple[str | None, Written]:
        from huggingface_hub import InferenceTimeoutError
        from huggingface_hub.errors import HfHubHTTPError

        messages = [
            {"role": "system", "content": INSTRUCTIONS},
            {"role": "user", "content": content},
        ]
        name = tool["function"]["name"]
        failures: list[str] = []
        for provider, client in self._clients:
            started = time.monotonic()
            try:
                # Typed loosely: the SDK's overloads want its own dataclasses for plain JSON.
                chat: Any = client.chat_completion
                out = chat(
                    messages=messages,
                    model=self.model,
                    tools=_FUNCTIONS,
                    tool_choice={"type": "function", "function": {"name": name}},
                    max_tokens=self.max_tokens,
                    temperature=0,
                    **(
                        {"stream": True, "stream_options": {"include_usage": True}}
                        if on_delta
                        else {}
                    ),
                )
                if on_delta is not None:
                    raw, usage = _streamed(out, on_delta)
                else:
                    raw, usage = _arguments(out), _usage(out)
            except HfHubHTTPError as exc:
                status = exc.response.status_code if exc.response is not None else 0
                if status == 429 or status >= 500:
                    failures.append(f"{provider}: HTTP {status}")
                    continue
                detail = (getattr(exc, "server_message", "") or "").strip()[:200]
                raise WriterError(
                    f"huggingface {provider}: HTTP {status}" + (f": {detail}" if detail else "")
                ) from None
            except InferenceTimeoutError:
                failures.append(f"{provider}: timed out")
                continue
            except ValueError as exc:  # an unknown provider, or a model it does not serve
                failures.append(f"{provider}: {str(exc)[:160]}")
                continue
            except OSError as exc:  # the connection (the SDK's transport errors are OSErrors)
                failures.append(f"{provider}: connection failed ({type(exc).__name__})")
                continue
            except Exception as exc:  # the transport's own error: a stream that broke off
                failures.append(f"{provider}: the stream broke off ({type(exc).__name__})")
                continue
            latency = int((time.monotonic() - started) * 1000)
            base = Written(NAME, self.model, None, None, usage, provider, latency, raw)
            if not raw:
                return None, replace(base, refusal=f"the answer did not call {name}")
            return raw, base
        raise WriterError("huggingface: no provider answered: " + "; ".join(failures))


def _usage(out: Any) -> Usage:
    usage = getattr(out, "usage", None)
    return Usage(
        input_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
        output_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
    )


def _streamed(chunks: Any, on_delta: Callable[[str], None]) -> tuple[str, Usage]:
    """The function call's arguments put together from a stream's deltas (each passed on as
    it arrives), or the text content when a model writes the JSON as text; and the usage,
    which the last chunk carries when asked for (``include_usage``)."""
    arguments: list[str] = []
    text: list[str] = []
    usage = Usage()
    for chunk in chunks:
        if getattr(chunk, "usage", None):
            usage = _usage(chunk)
        for choice in chunk.choices or []:
            delta = choice.delta
            for call in getattr(delta, "tool_calls", None) or []:
                piece = call.function.arguments if call.function else None
                if piece:
                    piece = piece if isinstance(piece, str) else json.dumps(piece)
                    arguments.append(piece)
                    on_delta(piece)
            if getattr(delta, "content", None):
                text.append(delta.content)
                on_delta(delta.content)
    return "".join(arguments) or "".join(text), usage


def _arguments(out: Any) -> str:
    """The function call's arguments (a string, or a dict some servers send), else the text
    content, which a model may use for the JSON instead."""
    message = out.choices[0].message if out.choices else None
    if message is None:
        return ""
    for call in message.tool_calls or []:
        arguments = call.function.arguments
        return arguments if isinstance(arguments, str) else json.dumps(arguments)
    return str(message.content or "")
