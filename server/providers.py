"""Build the configured providers from settings (None where keys are missing)."""

from __future__ import annotations

from typing import Any

import httpx

from config.settings import Settings
from pipeline.providers.base import LanguageModel, TextToSpeech
from pipeline.providers.cartesia_tts import CartesiaTTS
from pipeline.providers.cartesia_ws import CartesiaWebSocketTTS
from pipeline.providers.deepgram_stt import DeepgramSTT
from pipeline.providers.failover_llm import FailoverLLM
from pipeline.providers.openai_llm import OpenAILLM
from pipeline.session import Providers
from pipeline.speech_cache import SpeechCache


def build_providers(settings: Settings, http: httpx.AsyncClient) -> Providers:
    stt = None
    if settings.stt_configured:
        assert settings.deepgram_api_key is not None
        stt = DeepgramSTT(
            api_key=settings.deepgram_api_key.get_secret_value(),
            base_url=settings.deepgram_base_url,
            model=settings.deepgram_model,
            language=settings.deepgram_language,
            endpointing_ms=settings.deepgram_endpointing_ms,
            utterance_end_ms=settings.deepgram_utterance_end_ms,
            keepalive_s=settings.deepgram_keepalive_s,
            connect_timeout_s=settings.deepgram_connect_timeout_s,
            stall_timeout_s=settings.deepgram_stall_timeout_s,
            max_outage_s=settings.deepgram_max_outage_s,
        )
    llm = build_llm(settings) if settings.llm_configured else None
    tts: TextToSpeech | None = None
    if settings.tts_configured:
        assert settings.cartesia_api_key is not None and settings.cartesia_voice_id is not None
        common: dict[str, Any] = {
            "api_key": settings.cartesia_api_key.get_secret_value(),
            "voice_id": settings.cartesia_voice_id,
            "base_url": settings.cartesia_base_url,
            "model": settings.cartesia_model,
            "version": settings.cartesia_version,
            "language": settings.cartesia_language,
            "connect_timeout_s": settings.cartesia_connect_timeout_s,
            "first_audio_timeout_s": settings.cartesia_first_audio_timeout_s,
            "idle_timeout_s": settings.cartesia_idle_timeout_s,
        }
        if settings.cartesia_transport == "websocket":
            tts = CartesiaWebSocketTTS(**common)
        else:
            tts = CartesiaTTS(http=http, **common)
    return Providers(stt=stt, llm=llm, tts=tts, cache=SpeechCache(settings.greeting_cache_size))


def build_llm(settings: Settings) -> LanguageModel:
    """The primary OpenAI-compatible model, wrapped with the fallback endpoint if set."""
    assert settings.openai_api_key is not None
    key = settings.openai_api_key.get_secret_value()
    primary = _openai(settings, "openai", key, settings.openai_base_url, settings.openai_model)
    fallback_url = settings.openai_fallback_base_url
    if fallback_url is None:
        return primary
    model = settings.openai_fallback_model or settings.openai_model
    fallback_key = settings.openai_fallback_key()
    fallback = _openai(settings, "openai-fallback", fallback_key, fallback_url, model)
    return FailoverLLM(primary, fallback)


def _openai(settings: Settings, name: str, api_key: str, base_url: str, model: str) -> OpenAILLM:
    return OpenAILLM(
        api_key=api_key,
        base_url=base_url,
        model=model,
        temperature=settings.openai_temperature,
        max_tokens=settings.openai_max_tokens,
        connect_timeout_s=settings.openai_connect_timeout_s,
        first_token_timeout_s=settings.openai_first_token_timeout_s,
        idle_timeout_s=settings.openai_idle_timeout_s,
        name=name,
        keepalive_s=settings.http_keepalive_s,
    )
