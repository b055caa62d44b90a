"""Provider requests, counted: thin wrappers that tell the metrics each time a call opens an
STT stream, asks the LLM, or asks the TTS for audio (cached lines ask nothing).

They implement the same small provider protocols, so the session cannot tell them apart.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager

from pipeline.call.providers import Providers
from pipeline.providers.base import (
    LanguageModel,
    LLMEvent,
    Message,
    SpeechToText,
    STTStream,
    TextToSpeech,
    ToolSpec,
)

Count = Callable[[str, str], None]  # (provider name, stage)


class _MeteredSTT:
    def __init__(self, inner: SpeechToText, count: Count) -> None:
        self._inner = inner
        self._count = count
        self.name = inner.name

    def stream(self, sample_rate: int) -> AbstractAsyncContextManager[STTStream]:
        self._count(self.name, "stt")
        return self._inner.stream(sample_rate)

    async def aclose(self) -> None:
        await self._inner.aclose()


class _MeteredLLM:
    def __init__(self, inner: LanguageModel, count: Count) -> None:
        self._inner = inner
        self._count = count
        self.name = inner.name

    def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> AsyncIterator[LLMEvent]:
        self._count(self.name, "llm")
        return self._inner.stream(messages, tools)

    async def aclose(self) -> None:
        await self._inner.aclose()


class _MeteredTTS:
    def __init__(self, inner: TextToSpeech, count: Count) -> None:
        self._inner = inner
        self._count = count
        self.name = inner.name

    def cache_key(self, text: str, sample_rate: int) -> tuple[str, ...]:
        return self._inner.cache_key(text, sample_rate)

    def synthesize(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        self._count(self.name, "tts")
        return self._inner.synthesize(text, sample_rate)

    async def aclose(self) -> None:
        await self._inner.aclose()


def metered(providers: Providers, count: Count) -> Providers:
    """The same providers (and speech cache), each request counted."""
    return Providers(
        stt=None if providers.stt is None else _MeteredSTT(providers.stt, count),
        llm=None if providers.llm is None else _MeteredLLM(providers.llm, count),
        tts=None if providers.tts is None else _MeteredTTS(providers.tts, count),
        cache=providers.cache,
    )
