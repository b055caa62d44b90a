"""Sans-I/O half of the fake OpenAI: scripted replies and the exact bytes they stream as.

A :data:`Reply` is turned into a :class:`StreamPlan` -- a list of ``(delay_s, bytes)``
writes plus how the stream ends -- by :func:`plan_stream`; the server only sleeps and
writes. Chunk shapes follow the chat completions streaming API (openai 3.57's
``ChatCompletionChunk``).
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, assert_never

from .streaming import sse_event

__all__ = [
    "HttpError",
    "MidStreamError",
    "Reply",
    "Stall",
    "StreamPlan",
    "Text",
    "Timing",
    "Tool",
    "completion_body",
    "default_reply_text",
    "error_body",
    "plan_stream",
    "split_tokens",
]

_TOKEN = re.compile(r"\s*\S+|\s+")
_ARG_PIECE = 8  # characters of tool-call arguments per fragment
_TRAILING_PUNCT = ".!?,;: ।॥"
_DEVANAGARI = re.compile(r"[\u0900-\u097f]")


@dataclass(frozen=True, slots=True)
class Text:
    """Stream ``text``; latencies default to the fake's constructor values."""

    text: str
    first_token_ms: float | None = None
    per_token_ms: float | None = None


@dataclass(frozen=True, slots=True)
class Tool:
    """Optional ``text_before``, then one function call; finish_reason ``tool_calls``."""

    name: str
    arguments: str = "{}"
    text_before: str = ""
    call_id: str | None = None
    first_token_ms: float | None = None
    per_token_ms: float | None = None


@dataclass(frozen=True, slots=True)
class HttpError:
    """Answer with an HTTP error and the documented error JSON (no stream)."""

    status: int
    message: str | None = None
    retry_after_s: float | None = None  # 429 sends ``retry-after: 1`` unless set


@dataclass(frozen=True, slots=True)
class MidStreamError:
    """Stream ``text_before``, then ``data: {"error": ...}`` and end (no ``[DONE]``)."""

    text_before: str = ""
    message: str = "The server had an error while processing your request. Sorry about that!"
    type: str = "server_error"


@dataclass(frozen=True, slots=True)
class Stall:
    """Stream ``after_text`` (if any), then send nothing until the client disconnects."""

    after_text: str = ""


Reply = Text | Tool | HttpError | MidStreamError | Stall


@dataclass(frozen=True, slots=True)
class Timing:
    first_token_ms: float
    per_token_ms: float

    def resolve(self, reply: Text | Tool) -> Timing:
        first = self.first_token_ms if reply.first_token_ms is None else reply.first_token_ms
        per = self.per_token_ms if reply.per_token_ms is None else reply.per_token_ms
        return Timing(first, per)


@dataclass(slots=True)
class StreamPlan:
    writes: list[tuple[float, bytes]] = field(default_factory=list)  # (delay before, bytes)
    end: Literal["done", "error", "stall"] = "done"


def split_tokens(text: str) -> list[str]:
    """Word-ish pieces with their leading whitespace; ``"".join`` gives ``text`` back."""
    return _TOKEN.findall(text)


def _user_text(message: Any) -> str:
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, dict)]
        return " ".join(p for p in parts if isinstance(p, str))
    return ""


def default_reply_text(messages: Sequence[Any]) -> str:
    """The reply when nothing is scripted: two sentences echoing the last user message
    (in Hindi, with a danda, when the caller spoke Devanagari)."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            said = " ".join(_user_text(message).split()).rstrip(_TRAILING_PUNCT)
            if said and _DEVANAGARI.search(said):  # a Hindi call: answer in Hindi
                return f"आपने कहा: {said}। और कुछ?"
            if said:
                return f"You said: {said}. Is there anything else?"
            break
    return "Hello there. How can I help you today?"


_ERROR_KINDS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: (
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


def error_body(status: int, message: str | None = None) -> dict[str, Any]:
    """``{"error": {message, type, param, code}}`` as the API documents it."""
    kind, code, default = _ERROR_KINDS.get(status, ("server_error", None, "Request failed."))
    return {"error": {"message": message or default, "type": kind, "param": None, "code": code}}


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _prompt_tokens(body: dict[str, Any]) -> int:
    """A deterministic stand-in for the tokenizer: ~4 characters per token."""
    return max(1, math.ceil(len(json.dumps(body.get("messages", []))) / 4))


class _Chunks:
    """Builds the ``chat.completion.chunk`` objects of one response."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return self._encode([choice], None)

    def usage(self, usage: dict[str, Any]) -> bytes:
        return self._encode([], usage)

    def _encode(self, choices: list[dict[str, Any]], usage: dict[str, Any] | None) -> bytes:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "service_tier": "default",
            "system_fingerprint": "fp_testkit",
            "choices": choices,
        }
        if self.include_usage:
            body["usage"] = usage
        return sse_event(json.dumps(body, separators=(",", ":")))


def _leading_text(reply: Text | Tool | MidStreamError | Stall) -> str:
    match reply:
        case Text(text=text) | Tool(text_before=text) | MidStreamError(text_before=text):
            return text
        case Stall(after_text=text):
            return text
        case _:
            assert_never(reply)


def _call_id(reply: Tool) -> str:
    return reply.call_id or f"call_{uuid.uuid4().hex[:24]}"


def plan_stream(reply: Reply, body: dict[str, Any], defaults: Timing) -> StreamPlan:
    """The writes that answer ``body`` (a streaming request) with ``reply``."""
    if isinstance(reply, HttpError):
        raise ValueError("an HttpError reply is not streamed")
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    chunks = _Chunks(str(body.get("model", "")), include_usage)
    timing = defaults.resolve(reply) if isinstance(reply, Text | Tool) else defaults
    plan = StreamPlan()
    first_s, per_s = timing.first_token_ms / 1000, timing.per_token_ms / 1000
    role = chunks.chunk({"role": "assistant", "content": "", "refusal": None})
    pieces = split_tokens(_leading_text(reply))
    writes: list[bytes] = [chunks.chunk({"content": p}) for p in pieces]
    if isinstance(reply, Tool):
        writes.extend(_tool_writes(chunks, reply))
    # the role chunk goes out with the first token, after the first-token latency
    plan.writes.append((first_s, role + (writes.pop(0) if writes else b"")))
    plan.writes.extend((per_s, w) for w in writes)
    completion_tokens = len(pieces) + (1 if isinstance(reply, Tool) else 0)
    if isinstance(reply, MidStreamError):
        error = {
            "error": {"message": reply.message, "type": reply.type, "param": None, "code": None}
        }
        plan.writes.append((0.0, sse_event(json.dumps(error))))
        plan.end = "error"
    elif isinstance(reply, Stall):
        plan.end = "stall"
    else:
        finish = "tool_calls" if isinstance(reply, Tool) else "stop"
        tail = chunks.chunk({}, finish)
        if include_usage:
            tail += chunks.usage(_usage(_prompt_tokens(body), completion_tokens))
        plan.writes.append((0.0, tail + sse_event("[DONE]")))
    return plan


def _tool_writes(chunks: _Chunks, reply: Tool) -> list[bytes]:
    head = {
        "index": 0,
        "id": _call_id(reply),
        "type": "function",
        "function": {"name": reply.name, "arguments": ""},
    }
    writes = [chunks.chunk({"tool_calls": [head]})]
    args = reply.arguments
    for i in range(0, len(args), _ARG_PIECE):
        fragment = {"index": 0, "function": {"arguments": args[i : i + _ARG_PIECE]}}
        writes.append(chunks.chunk({"tool_calls": [fragment]}))
    return writes


def completion_body(reply: Text | Tool, body: dict[str, Any]) -> dict[str, Any]:
    """The non-streaming ``chat.completion`` answer."""
    text = reply.text if isinstance(reply, Text) else reply.text_before
    message: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
    finish = "stop"
    if isinstance(reply, Tool):
        call = {"name": reply.name, "arguments": reply.arguments}
        message["tool_calls"] = [{"id": _call_id(reply), "type": "function", "function": call}]
        finish = "tool_calls"
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(body.get("model", "")),
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": _usage(_prompt_tokens(body), len(split_tokens(text)) + 1),
        "service_tier": "default",
        "system_fingerprint": "fp_testkit",
    }
