"""A second OpenAI-compatible endpoint for when the first fails before its first token.

Once the primary has produced an event, a later failure is the primary's: the caller
may already be hearing that reply, so switching models mid-sentence would not help. A
failed primary is skipped for ``cooldown_s`` so later turns do not pay for it again.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from config.logs import get_logger
from pipeline.providers.base import LanguageModel, LLMEvent, Message, ProviderError, ToolSpec
from pipeline.providers.warm import Warmable

log = get_logger("OPENAI")


class FailoverLLM:
    def __init__(
        self, primary: LanguageModel, fallback: LanguageModel, *, cooldown_s: float = 30.0
    ) -> None:
        self.name = f"{primary.name}+{fallback.name}"
        self.primary = primary
        self.fallback = fallback
        self.cooldown_s = cooldown_s
        self._primary_down_until = 0.0

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> AsyncIterator[LLMEvent]:
        if time.monotonic() < self._primary_down_until:
            async for event in _closing(self.fallback.stream(messages, tools)):
                yield event
            return
        primary = self.primary.stream(messages, tools)
        started = False
        try:
            async for event in primary:
                started = True
                yield event
            return
        except ProviderError as exc:
            if started:
                raise
            self._primary_down_until = time.monotonic() + self.cooldown_s
            log.warning("%s; failing over to %s", exc, self.fallback.name)
        finally:
            await _aclose(primary)
        async for event in _closing(self.fallback.stream(messages, tools)):
            yield event

    async def warm(self, connections: int) -> int:
        """Both endpoints' connections; the count is the primary's."""
        counts = [
            await model.warm(connections)
            for model in (self.primary, self.fallback)
            if isinstance(model, Warmable)
        ]
        return counts[0] if counts else 0

    async def aclose(self) -> None:
        for model in (self.primary, self.fallback):
            close = getattr(model, "aclose", None)
            if close is not None:
                await close()


async def _closing(stream: AsyncIterator[LLMEvent]) -> AsyncIterator[LLMEvent]:
    """Iterate ``stream`` and close it (and its socket) however the iteration ends."""
    try:
        async for event in stream:
            yield event
    finally:
        await _aclose(stream)


async def _aclose(stream: AsyncIterator[Any]) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()
