"""OpenAI (or any OpenAI-compatible server) chat completions, streamed.

The SDK's own retries are off: a voice turn has a deadline, so the session decides
whether another attempt still fits, using ``ProviderError.retryable``.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx2
import openai

from config.logs import get_logger
from config.settings import OpenAISettings
from pipeline.providers.base import (
    LLMEvent,
    Message,
    ProviderError,
    TextDelta,
    ToolCall,
    ToolSpec,
    status_error,
)
from pipeline.providers.warm import warm_together
from pipeline.retry import PhaseClock

log = get_logger("OPENAI")

_PROVIDER = "openai"

# Stream chunks stay plain JSON objects: building SDK models for every token costs more
# than the turn's own work, and only three fields are read.
_Chunk = dict[str, Any]


@dataclass(slots=True)
class _ToolFragments:
    call_id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


def request_body(
    model: str,
    messages: Sequence[Message],
    tools: Sequence[ToolSpec],
    *,
    temperature: float,
    max_tokens: int,
) -> dict[str, Any]:
    """The chat.completions arguments for one streamed turn (pure, for tests)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": list(messages),
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": temperature,
        "max_completion_tokens": max_tokens,
    }
    if tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters,
                },
            }
            for t in tools
        ]
    return body


def map_error(exc: openai.OpenAIError, provider: str = _PROVIDER) -> ProviderError:
    """Translate SDK exceptions at the boundary into our one error tree."""
    if isinstance(exc, openai.APITimeoutError):
        return ProviderError(provider, "request timed out", retryable=True)
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError(provider, "cannot connect", retryable=True)
    if isinstance(exc, openai.APIStatusError):
        return status_error(provider, exc.status_code, _short(exc.message), exc.response.headers)
    if isinstance(exc, openai.APIError):
        # An error event inside an otherwise healthy stream: transient on their side.
        return ProviderError(provider, f"stream error: {_short(exc.message)}", retryable=True)
    return ProviderError(provider, _short(str(exc)), retryable=False)


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


class OpenAILLM:
    def __init__(
        self, settings: OpenAISettings, *, name: str = _PROVIDER, keepalive_s: float = 5.0
    ) -> None:
        self.name = name
        self.model = settings.model
        self.temperature = settings.temperature
        self.max_tokens = settings.max_tokens
        self.first_token_timeout_s = settings.first_token_timeout_s
        self.idle_timeout_s = settings.idle_timeout_s
        # The HTTP read timeout is only a backstop: a server can keep bytes flowing (role
        # chunks, keep-alive comments) without a token, so stream() times tokens itself.
        backstop = max(settings.first_token_timeout_s, settings.idle_timeout_s) + 1.0
        timeout = openai.Timeout(backstop, connect=settings.connect_timeout_s)
        api_key = settings.api_key.get_secret_value() if settings.api_key is not None else ""
        # The SDK's own pool (httpx2), with idle connections kept past the next warm-up.
        limits = httpx2.Limits(
            max_connections=1000, max_keepalive_connections=100, keepalive_expiry=keepalive_s
        )
        self._client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=settings.base_url,
            max_retries=0,
            timeout=timeout,
            http_client=openai.DefaultAsyncHttpxClient(limits=limits, timeout=timeout),
        )

    async def warm_connections(self, connections: int) -> int:
        """``GET /models/{model}`` (a small, free request) on ``connections`` connections."""
        return await warm_together(connections, self._ping)

    async def _ping(self, hold: Callable[[], Awaitable[None]]) -> bool:
        try:
            retrieve = self._client.with_streaming_response.models.retrieve
            async with retrieve(self.model) as response:
                await hold()  # keep this connection busy until every probe has one
                await response.read()  # a read body returns the connection to the pool
        except openai.APIStatusError as exc:
            return exc.status_code < 500  # answered: the connection is open
        except openai.OpenAIError as exc:
            log.warning("Warm-up request failed: %s", map_error(exc, self.name))
            return False
        return True

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> AsyncIterator[LLMEvent]:
        body = request_body(
            self.model, messages, tools, temperature=self.temperature, max_tokens=self.max_tokens
        )
        started = time.monotonic()
        first_token_ms: float | None = None
        tools_seen: dict[int, _ToolFragments] = {}
        finish_reason: str | None = None
        log.info("Stream request | model=%s messages=%d", self.model, len(body["messages"]))
        clock = PhaseClock(
            self.name, "first_token", self.first_token_timeout_s, self.idle_timeout_s
        )
        try:
            async with clock.opening():
                stream = await self._client.post(
                    "/chat/completions",
                    body=body,
                    cast_to=_Chunk,
                    stream=True,
                    stream_cls=openai.AsyncStream[_Chunk],
                )
            async with stream:
                chunks = stream.__aiter__()
                while True:
                    try:
                        chunk = await clock.next(chunks)
                    except StopAsyncIteration:
                        break
                    if not clock.waiting_first:
                        clock.result()  # once tokens flow, any chunk restarts the idle gap
                    for choice in chunk.get("choices") or ():
                        delta = choice.get("delta") or {}
                        content = delta.get("content")
                        if content:
                            if first_token_ms is None:
                                first_token_ms = (time.monotonic() - started) * 1000
                                clock.result()
                            yield TextDelta(content)
                        for fragment in delta.get("tool_calls") or ():
                            clock.result()  # a tool call is a first result too
                            acc = tools_seen.setdefault(fragment.get("index", 0), _ToolFragments())
                            if fragment.get("id"):
                                acc.call_id = fragment["id"]
                            function = fragment.get("function") or {}
                            if function.get("name"):
                                acc.name = function["name"]
                            if function.get("arguments"):
                                acc.arguments.append(function["arguments"])
                        if choice.get("finish_reason"):
                            finish_reason = choice["finish_reason"]
        except openai.OpenAIError as exc:
            raise map_error(exc, self.name) from exc
        for index in sorted(tools_seen):
            acc = tools_seen[index]
            arguments = "".join(acc.arguments) or "{}"
            log.info("Tool call | name=%s arguments=%s", acc.name, _short(arguments, 120))
            yield ToolCall(acc.name, arguments, acc.call_id)
        log.info(
            "Completion | finish=%s first_token_ms=%s total_ms=%.0f",
            finish_reason,
            "-" if first_token_ms is None else f"{first_token_ms:.0f}",
            (time.monotonic() - started) * 1000,
        )

    async def aclose(self) -> None:
        await self._client.close()


def parse_arguments(arguments: str) -> dict[str, Any]:
    """Tool arguments as a dict; a model that sent broken JSON gets an empty one."""
    try:
        value = json.loads(arguments or "{}")
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
