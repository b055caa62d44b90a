"""Provider requests, counted: thin wrappers that tell the metrics each time a call opens an
STT stream, asks the LLM, or asks the TTS for audio (cached lines ask nothing).

They implement the same provider protocols and hand every other attribute (``warm``,
``aclose``, ...) to the provider itself, so neither the session nor the optional
capabilities checked with ``isinstance`` (``Warmable``, ``ContextTextToSpeech``) can tell
them apart. A TTS gets a ``context`` method only if it has one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from pipeline.call.providers import Providers
from pipeline.providers.base import (
    ContextTextToSpeech,
    LLMEvent,
    Message,
    SpeechContext,
    STTStream,
    TextToSpeech,
    ToolSpec,
)

Count = Callable[[str, str], None]  # (provider name, stage)


class _Metered:
    def __init__(self, inner: Any, count: Count) -> None:
        self._inner = inner
        self._count = count
        self.name: str = inner.name

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._inner, attribute)

    async def aclose(self) -> None:
        await self._inner.aclose()


class _MeteredSTT(_Metered):
    def stream(self, sample_rate: int) -> AbstractAsyncContextManager[STTStream]:
        self._count(self.name, "stt")
        stream: AbstractAsyncContextManager[STTStream] = self._inner.stream(sample_rate)
        return stream


class _MeteredLLM(_Metered):
    def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> AsyncIterator[LLMEvent]:
        self._count(self.name, "llm")
        events: AsyncIterator[LLMEvent] = self._inner.stream(messages, tools)
        return events


class _MeteredTTS(_Metered):
    def cache_key(self, text: str, sample_rate: int) -> tuple[str, ...]:
        key: tuple[str, ...] = self._inner.cache_key(text, sample_rate)
        return key

    def synthesize(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        self._count(self.name, "tts")
        audio: AsyncIterator[bytes] = self._inner.synthesize(text, sample_rate)
        return audio


class _MeteredContextTTS(_MeteredTTS):
    def context(self, sample_rate: int) -> AbstractAsyncContextManager[SpeechContext]:
        self._count(self.name, "tts")  # one reply, voiced as one context
        context: AbstractAsyncContextManager[SpeechContext] = self._inner.context(sample_rate)
        return context


def _tts(inner: TextToSpeech, count: Count) -> TextToSpeech:
    if isinstance(inner, ContextTextToSpeech):
        return _MeteredContextTTS(inner, count)
    return _MeteredTTS(inner, count)


class Metering:
    """Wraps providers for counting, one wrapper per provider object: providers shared
    between the call languages stay shared (and are closed once)."""

    def __init__(self, count: Count) -> None:
        self._count = count
        self._wrapped: dict[int, Any] = {}

    def _wrap(self, inner: Any, make: Callable[[Any, Count], Any]) -> Any:
        found = self._wrapped.get(id(inner))
        if found is None:
            found = self._wrapped[id(inner)] = make(inner, self._count)
        return found

    def providers(self, providers: Providers) -> Providers:
        """The same providers (and speech cache), each request counted."""
        stt, llm, tts = providers.stt, providers.llm, providers.tts
        return Providers(
            stt=None if stt is None else self._wrap(stt, _MeteredSTT),
            llm=None if llm is None else self._wrap(llm, _MeteredLLM),
            tts=None if tts is None else self._wrap(tts, _tts),
            cache=providers.cache,
        )


def metered(providers: Providers, count: Count) -> Providers:
    """One set of providers, each request counted."""
    return Metering(count).providers(providers)


def unwrap(provider: Any) -> Any:
    """The provider itself behind its counting wrapper (for type-specific start-up work)."""
    return provider._inner if isinstance(provider, _Metered) else provider
