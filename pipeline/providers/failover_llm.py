"""A second OpenAI-compatible endpoint for when the first fails before its first token.

Once the primary has produced an event, a later failure is the primary's: the caller
may already be hearing that reply, so switching models mid-sentence would not help. A
failed primary is skipped for a cool-down (``cooldown_s``, doubling while it keeps
failing, up to 4x) so later turns do not pay for it again.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence

from config.logs import get_logger
from pipeline.aio import aclose
from pipeline.providers.base import LanguageModel, LLMEvent, Message, ProviderError, ToolSpec
from pipeline.providers.warm import Warmable
from pipeline.retry import RetryPolicy

log = get_logger("OPENAI")


class FailoverLLM:
    def __init__(
        self,
        primary: LanguageModel,
        fallback: LanguageModel,
        *,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = f"{primary.name}+{fallback.name}"
        self.primary = primary
        self.fallback = fallback
        self.cooldown = RetryPolicy(base_s=cooldown_s, cap_s=4 * cooldown_s)
        self._clock = clock
        self._failures = 0  # primary failures in a row
        self.primary_down_until = 0.0

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> AsyncIterator[LLMEvent]:
        if self._clock() < self.primary_down_until:
            async for event in _closing(self.fallback.stream(messages, tools)):
                yield event
            return
        primary = self.primary.stream(messages, tools)
        started = False
        try:
            async for event in primary:
                started = True
                yield event
            self._failures = 0
            return
        except ProviderError as exc:
            if started:
                raise
            self._failures += 1
            self.primary_down_until = self._clock() + self.cooldown.backoff(self._failures)
            log.warning("%s; failing over to %s", exc, self.fallback.name)
        finally:
            await aclose(primary)
        async for event in _closing(self.fallback.stream(messages, tools)):
            yield event

    async def warm_connections(self, connections: int) -> int:
        """Both endpoints' connections; the count is the primary's."""
        counts = [
            await model.warm_connections(connections)
            for model in (self.primary, self.fallback)
            if isinstance(model, Warmable)
        ]
        return counts[0] if counts else 0

    async def aclose(self) -> None:
        await self.primary.aclose()
        await self.fallback.aclose()


async def _closing(stream: AsyncIterator[LLMEvent]) -> AsyncIterator[LLMEvent]:
    """Iterate ``stream`` and close it (and its socket) however the iteration ends."""
    try:
        async for event in stream:
            yield event
    finally:
        await aclose(stream)
