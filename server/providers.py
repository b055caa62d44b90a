"""Build the configured providers from settings (None where keys are missing)."""

from __future__ import annotations

import httpx

from config.settings import Settings
from pipeline.providers.base import LanguageModel, SpeechToText, TextToSpeech
from pipeline.providers.cartesia_tts import CartesiaTTS
from pipeline.providers.deepgram_stt import DeepgramSTT
from pipeline.providers.failover_llm import FailoverLLM
from pipeline.providers.openai_llm import OpenAILLM
from pipeline.session import Providers
from pipeline.speech_cache import SpeechCache
from server.local_stack import LocalStack
from server.provider_choice import ProviderChoice


def build_providers(
    settings: Settings,
    http: httpx.AsyncClient,
    choice: ProviderChoice,
    local: LocalStack | None = None,
) -> Providers:
    """Each stage's chosen provider (see server/provider_choice.py); None where there is none."""
    stt: SpeechToText | None = local.stt if local is not None else None
    if choice.stt.provider == "deepgram":
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
    llm: LanguageModel | None = local.llm if local is not None else None
    if choice.llm.provider == "openai":
        llm = build_llm(settings)
    tts: TextToSpeech | None = local.tts if local is not None else None
    if choice.tts.provider == "cartesia":
        assert settings.cartesia_api_key is not None and settings.cartesia_voice_id is not None
        tts = CartesiaTTS(
            http=http,
            api_key=settings.cartesia_api_key.get_secret_value(),
            voice_id=settings.cartesia_voice_id,
            base_url=settings.cartesia_base_url,
            model=settings.cartesia_model,
            version=settings.cartesia_version,
            language=settings.cartesia_language,
            connect_timeout_s=settings.cartesia_connect_timeout_s,
            first_audio_timeout_s=settings.cartesia_first_audio_timeout_s,
            idle_timeout_s=settings.cartesia_idle_timeout_s,
        )
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
    )
