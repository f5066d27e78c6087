"""Local stand-ins for the Anthropic Messages API and the Hugging Face router, at the HTTP
boundary: the real SDKs talk to them over real sockets. They replay the services' documented
wire formats (Anthropic's server-sent events for a streamed tool use, its error bodies; the
router's OpenAI-style chat completions and the Hub's provider mapping) and record every
request, so a test checks what the SDK sent as well as what the writer made of the answer.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Reply:
    """One answer: a status and a JSON body, or an SSE stream of (event, data) pairs, possibly
    cut off after ``cut_after`` events (``clean``: the connection closes normally)."""

    status: int = 200
    body: Any = None
    #: SSE frames: (event name, data); an empty name sends no ``event:`` line (the OpenAI
    #: style), and a str data is sent as it is ("[DONE]").
    events: list[tuple[str, Any]] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    cut_after: int | None = None
    clean: bool = False
    delay: float = 0.0


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class StubServer:
    """A threaded HTTP server on 127.0.0.1 answering from per-path queues."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.queues: dict[str, list[Reply]] = {}
        self.fixed: dict[str, Reply] = {}
        self.responders: dict[str, Callable[[Any], Reply]] = {}
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body: Any = json.loads(raw) if raw else None
                except json.JSONDecodeError:
                    body = raw.decode(errors="replace")
                path = self.path.split("?")[0]
                stub.requests.append(
                    Recorded(
                        self.command,
                        self.path,
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                    )
                )
                reply = stub.next_reply(path, body)
                try:
                    stub.answer(self, reply)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up first (a timeout test)

            do_GET = _handle  # noqa: N815
            do_POST = _handle  # noqa: N815

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> StubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def queue(self, path: str, *replies: Reply) -> None:
        self.queues.setdefault(path, []).extend(replies)

    def next_reply(self, path: str, body: Any = None) -> Reply:
        if self.queues.get(path):
            return self.queues[path].pop(0)
        if path in self.responders:
            return self.responders[path](body)
        for prefix, reply in self.fixed.items():
            if path.startswith(prefix):
                return reply
        return Reply(404, {"error": f"no reply queued for {path}"})

    def posts(self, suffix: str = "") -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST" and r.path.endswith(suffix)]

    @staticmethod
    def answer(handler: BaseHTTPRequestHandler, reply: Reply) -> None:
        if reply.delay:
            import time

            time.sleep(reply.delay)
        if reply.events is None:
            data = json.dumps(reply.body).encode()
            handler.send_response(reply.status)
            handler.send_header("Content-Type", "application/json")
            for name, value in reply.headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
            return
        frames = [
            (
                (f"event: {name}\n" if name else "")
                + f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"
            ).encode()
            for name, data in reply.events
        ]
        handler.send_response(reply.status)
        handler.send_header("Content-Type", "text/event-stream")
        if reply.cut_after is not None and reply.clean:
            handler.send_header("Connection", "close")
            handler.end_headers()
            handler.wfile.write(b"".join(frames[: reply.cut_after]))
            handler.wfile.flush()
            handler.close_connection = True
            return
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for index, frame in enumerate(frames):
            if reply.cut_after is not None and index == reply.cut_after:
                handler.wfile.flush()
                handler.connection.shutdown(socket.SHUT_RDWR)  # no final chunk: broken off
                handler.close_connection = True
                return
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))
            handler.wfile.flush()
        handler.wfile.write(b"0\r\n\r\n")


# --- Anthropic ------------------------------------------------------------------------------


def split_awkwardly(text: str) -> list[str]:
    """Pieces of ``text`` cut where a naive parser would trip: inside a string, between a
    backslash and what it escapes, inside a unicode escape, between ``"`` and ``:``."""
    cuts = sorted({3, 7, 11, 12, 20, 33, 34, 35} | set(range(50, len(text), 41)))
    for i, char in enumerate(text[:-1]):
        if char == "\\":
            cuts.append(i + 1)  # between the backslash and the escaped character
            break
    cuts = sorted(c for c in set(cuts) if 0 < c < len(text))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


def tool_use_stream(
    arguments: dict[str, Any],
    *,
    model: str = "claude-sonnet-4-5",
    usage: dict[str, int] | None = None,
    output_tokens: int = 312,
    name: str = "record_verdict",
) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """A streamed tool-use message as the Messages API sends it, and the argument pieces."""
    pieces = split_awkwardly(json.dumps(arguments, ensure_ascii=True))
    start_usage = usage or {
        "input_tokens": 1200,
        "output_tokens": 1,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_01",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": start_usage,
                },
            },
        ),
        ("ping", {"type": "ping"}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "tool_use", "id": "toolu_01", "name": name, "input": {}},
            },
        ),
        *(
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": piece},
                },
            )
            for piece in pieces
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": {"output_tokens": output_tokens},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return events, pieces


def anthropic_error(status: int, kind: str, message: str, **headers: str) -> Reply:
    return Reply(
        status, {"type": "error", "error": {"type": kind, "message": message}}, headers=headers
    )


#: A grounded intro for an edition that carries the seed comparison.
INTRO: dict[str, Any] = {
    "text": "This week the seed question: Claude 4 API or Hugging Face Inference Providers "
    "Marketplace? Both ship, for different jobs, and the panel says why."
}


class CachingMessages:
    """Answers every Messages call with ``arguments``, reporting cache use as the service
    does: the first request with a given prefix (tools + system up to the breakpoint) writes
    the cache, a later one with the same bytes reads it. A prefix that changed gets no hit."""

    def __init__(
        self, stub: StubServer, arguments: dict[str, Any], intro: dict[str, Any] | None = None
    ) -> None:
        self.stub = stub
        self.arguments = arguments
        self.intro = intro or INTRO
        self.seen: set[str] = set()

    def prefix_key(self, body: dict[str, Any]) -> str:
        prefix = json.dumps([body.get("tools"), body.get("system")], sort_keys=True)
        return hashlib.sha256(prefix.encode()).hexdigest()

    def reply_for(self, body: dict[str, Any]) -> Reply:
        key = self.prefix_key(body)
        cached = 2048
        usage = {
            "input_tokens": 900,
            "output_tokens": 1,
            "cache_creation_input_tokens": 0 if key in self.seen else cached,
            "cache_read_input_tokens": cached if key in self.seen else 0,
        }
        self.seen.add(key)
        tool = body.get("tool_choice", {}).get("name", "record_verdict")
        arguments = self.intro if tool == "record_intro" else self.arguments
        events, _ = tool_use_stream(arguments, usage=usage, name=tool)
        return Reply(events=events)


# --- Hugging Face ---------------------------------------------------------------------------


def hf_mapping(model: str, providers: dict[str, str]) -> dict[str, Any]:
    """The Hub's answer to /api/models/{model}?expand=inferenceProviderMapping."""
    return {
        "id": model,
        "inferenceProviderMapping": {
            name: {"status": "live", "providerId": provider_id, "task": "conversational"}
            for name, provider_id in providers.items()
        },
    }


def chat_completion(arguments: dict[str, Any] | str, *, as_tool: bool = True) -> dict[str, Any]:
    """An OpenAI-style chat completion carrying ``arguments`` as a function call (or as text)."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    message: dict[str, Any] = {"role": "assistant", "content": None if as_tool else text}
    if as_tool:
        message["tool_calls"] = [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "record_verdict", "arguments": text},
            }
        ]
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_800_000_000,
        "model": "stub",
        "choices": [
            {"index": 0, "finish_reason": "tool_calls" if as_tool else "stop", "message": message}
        ],
        "usage": {"prompt_tokens": 1400, "completion_tokens": 260, "total_tokens": 1660},
    }


def chat_completion_stream(
    arguments: dict[str, Any], *, name: str = "record_verdict"
) -> tuple[list[tuple[str, Any]], list[str]]:
    """A streamed chat completion as the router relays it (OpenAI's format: ``data:`` lines,
    the function's arguments in delta pieces cut awkwardly, a finish chunk, a usage chunk
    because ``include_usage`` was asked for, then ``[DONE]``), and the argument pieces."""
    pieces = split_awkwardly(json.dumps(arguments, ensure_ascii=True))

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-s1",
            "object": "chat.completion.chunk",
            "created": 1_800_000_000,
            "model": "stub",
            "system_fingerprint": "fp_stub",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    def call(piece: str, first: bool = False) -> dict[str, Any]:
        function: dict[str, Any] = {"arguments": piece}
        if first:
            function["name"] = name
        return {
            "tool_calls": [{"index": 0, "id": "call_s1", "type": "function", "function": function}]
        }

    events: list[tuple[str, Any]] = [
        ("", chunk({"role": "assistant", "content": None, **call("", first=True)})),
        *(("", chunk(call(piece))) for piece in pieces),
        ("", chunk({}, "tool_calls")),
        (
            "",
            {
                "id": "chatcmpl-s1",
                "object": "chat.completion.chunk",
                "created": 1_800_000_000,
                "model": "stub",
                "system_fingerprint": "fp_stub",
                "choices": [],
                "usage": {"prompt_tokens": 1500, "completion_tokens": 280, "total_tokens": 1780},
            },
        ),
        ("", "[DONE]"),
    ]
    return events, pieces


HF_ROUTES = {
    "groq": "/groq/openai/v1/chat/completions",
    "together": "/together/v1/chat/completions",
    "fireworks-ai": "/fireworks-ai/inference/v1/chat/completions",
}


def serve_hub(stub: StubServer, model: str, providers: dict[str, str]) -> None:
    """The Hub endpoints the SDK reads before a routed call."""
    stub.fixed["/api/agent-harnesses"] = Reply(200, {"standardEnvVars": [], "harnesses": {}})
    stub.fixed[f"/api/models/{model}"] = Reply(200, hf_mapping(model, providers))


def iter_posts(stub: StubServer) -> Iterator[tuple[str, Any]]:
    for r in stub.requests:
        if r.method == "POST":
            yield r.path, r.body
