"""Build the configured providers from settings (None where keys are missing)."""

from __future__ import annotations

import httpx

from config.settings import Settings
from pipeline.providers.cartesia_tts import CartesiaTTS
from pipeline.providers.deepgram_stt import DeepgramSTT
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
        )
    llm = None
    if settings.llm_configured:
        assert settings.openai_api_key is not None
        llm = OpenAILLM(
            api_key=settings.openai_api_key.get_secret_value(),
            base_url=settings.openai_base_url,
            model=settings.openai_model,
            temperature=settings.openai_temperature,
            max_tokens=settings.openai_max_tokens,
        )
    tts = None
    if settings.tts_configured:
        assert settings.cartesia_api_key is not None and settings.cartesia_voice_id is not None
        tts = CartesiaTTS(
            http=http,
            api_key=settings.cartesia_api_key.get_secret_value(),
            voice_id=settings.cartesia_voice_id,
            base_url=settings.cartesia_base_url,
            model=settings.cartesia_model,
            version=settings.cartesia_version,
            language=settings.cartesia_language,
        )
    return Providers(stt=stt, llm=llm, tts=tts, cache=SpeechCache(settings.greeting_cache_size))
