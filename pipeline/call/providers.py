"""What a call is built from: one provider per stage, and the cache of fixed lines."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.providers.base import LanguageModel, SpeechToText, TextToSpeech
from pipeline.speech_cache import SpeechCache


@dataclass(slots=True)
class Providers:
    """What a call is built from (None where a stage is not configured)."""

    stt: SpeechToText | None
    llm: LanguageModel | None
    tts: TextToSpeech | None
    cache: SpeechCache = field(default_factory=SpeechCache)

    def missing(self) -> list[str]:
        names = {"STT": self.stt, "LLM": self.llm, "TTS": self.tts}
        return [name for name, provider in names.items() if provider is None]

    def names(self) -> dict[str, str]:
        stages = {"stt": self.stt, "llm": self.llm, "tts": self.tts}
        return {stage: p.name for stage, p in stages.items() if p is not None}

    async def aclose(self) -> None:
        for provider in (self.stt, self.llm, self.tts):
            if provider is not None:
                await provider.aclose()
