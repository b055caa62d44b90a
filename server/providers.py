"""The composition root: which provider runs each stage, built once from the settings.

Per stage, ``STT_PROVIDER`` / ``LLM_PROVIDER`` / ``TTS_PROVIDER`` choose:

- a cloud provider by name (``deepgram``, ``openai``, ``cartesia``): used when its keys
  are set, else the stage has no provider and calls hear an apology;
- ``local``: a local provider from :data:`LOCAL_PROVIDERS` (the keyless mode's modules
  register there); when none is installed the stage has none, and start-up says so;
- ``auto`` (the default): the cloud provider when its keys are set, else the local one.

:func:`choose` is the pure decision (tested on its own); :func:`build_providers` makes
the providers it chose. Nothing else in the server names a vendor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from config.settings import CartesiaSettings, Settings
from pipeline.call.providers import Providers
from pipeline.language import CallLanguage
from pipeline.providers.base import LanguageModel, SpeechToText, TextToSpeech
from pipeline.providers.cartesia_tts import CartesiaTTS
from pipeline.providers.cartesia_ws import CartesiaWebSocketTTS
from pipeline.providers.deepgram_stt import DeepgramSTT
from pipeline.providers.failover_llm import FailoverLLM
from pipeline.providers.openai_llm import OpenAILLM
from pipeline.speech_cache import SpeechCache
from server.metered import unwrap

Stage = Literal["stt", "llm", "tts"]
STAGES: tuple[Stage, ...] = ("stt", "llm", "tts")
CLOUD: dict[Stage, str] = {"stt": "deepgram", "llm": "openai", "tts": "cartesia"}
_WHAT = {"stt": "speech recognition", "llm": "language model", "tts": "voice"}

# The keyless mode's builders, by stage: each returns the stage's provider, made from the
# settings. Empty unless local providers are installed (``pip install -e ".[local]"``).
LOCAL_PROVIDERS: dict[Stage, Callable[[Settings], Any]] = {}


@dataclass(frozen=True, slots=True)
class Choice:
    """What runs one stage, and why (for the start-up log and ``/health``)."""

    stage: Stage
    wanted: str  # the setting: auto, local or a cloud provider's name
    provider: str | None  # "deepgram", "local", ... or None: the stage cannot run
    reason: str
    missing: tuple[str, ...] = ()  # what would make it run: settings, or the local extra

    @property
    def setting(self) -> str:
        return f"{self.stage.upper()}_PROVIDER"


def choose(settings: Settings, local: frozenset[str] | None = None) -> dict[Stage, Choice]:
    """The provider for every stage (``local``: the stages with a local provider installed)."""
    installed = frozenset(LOCAL_PROVIDERS) if local is None else local
    missing = {
        "stt": settings.deepgram.missing(),
        "llm": settings.openai.missing(),
        "tts": settings.cartesia.missing(),
    }
    wanted = {
        "stt": settings.providers.stt,
        "llm": settings.providers.llm,
        "tts": settings.providers.tts,
    }
    return {
        stage: _choose(stage, wanted[stage], missing[stage], stage in installed) for stage in STAGES
    }


def _choose(stage: Stage, wanted: str, missing: list[str], local_installed: bool) -> Choice:
    cloud = CLOUD[stage]
    setting = f"{stage.upper()}_PROVIDER"
    keys = " and ".join(missing)
    no_local = f'no local {_WHAT[stage]} is installed (pip install -e ".[local]")'
    if wanted in ("auto", cloud) and not missing:
        return Choice(stage, wanted, cloud, "its keys are set")
    if wanted == cloud:
        return Choice(stage, wanted, None, f"{setting}={cloud} but {keys} is not set", (*missing,))
    if local_installed:
        why = f"{setting}=local" if wanted == "local" else f"{keys} not set"
        return Choice(stage, wanted, "local", why)
    if wanted == "local":
        return Choice(stage, wanted, None, f"{setting}=local but {no_local}", (f"local {stage}",))
    reason = f"set {keys}, or install a local {_WHAT[stage]}: {no_local}"
    return Choice(stage, wanted, None, reason, (*missing,))


def missing(choices: dict[Stage, Choice]) -> list[str]:
    """What the stages that cannot run need, e.g. ``["DEEPGRAM_API_KEY"]``."""
    return [item for choice in choices.values() for item in choice.missing]


def build_providers(
    settings: Settings, http: httpx.AsyncClient, choices: dict[Stage, Choice] | None = None
) -> Providers:
    choices = choices or choose(settings)
    stt: SpeechToText | None = None
    llm: LanguageModel | None = None
    tts: TextToSpeech | None = None
    if choices["stt"].provider == "deepgram":
        stt = DeepgramSTT(settings.deepgram)
    elif choices["stt"].provider == "local":
        stt = LOCAL_PROVIDERS["stt"](settings)
    if choices["llm"].provider == "openai":
        llm = build_llm(settings)
    elif choices["llm"].provider == "local":
        llm = LOCAL_PROVIDERS["llm"](settings)
    if choices["tts"].provider == "cartesia":
        tts = _cartesia(settings.cartesia, http)
    elif choices["tts"].provider == "local":
        tts = LOCAL_PROVIDERS["tts"](settings)
    return Providers(
        stt=stt, llm=llm, tts=tts, cache=SpeechCache(settings.agent.greeting_cache_size)
    )


def build_llm(settings: Settings) -> LanguageModel:
    """The primary OpenAI-compatible model, wrapped with the fallback endpoint if set."""
    keepalive_s = settings.server.http_keepalive_s
    primary = OpenAILLM(settings.openai, keepalive_s=keepalive_s)
    fallback = settings.openai.fallback()
    if fallback is None:
        return primary
    return FailoverLLM(
        primary, OpenAILLM(fallback, name="openai-fallback", keepalive_s=keepalive_s)
    )


def providers_for_language(
    settings: Settings,
    http: httpx.AsyncClient,
    choices: dict[Stage, Choice],
    base: Providers,
    language: CallLanguage,
) -> Providers:
    """``base`` listening and speaking ``language``: the cloud STT and TTS get its language
    (and voice); the LLM, the local providers and the line cache are shared."""
    stt, tts = base.stt, base.tts
    deepgram, cartesia = settings.deepgram, settings.cartesia
    if choices["stt"].provider == "deepgram" and language.stt_language != deepgram.language:
        stt = DeepgramSTT(deepgram.model_copy(update={"language": language.stt_language}))
    voice = language.tts_voice_id or cartesia.voice_id
    wanted = (language.tts_language, voice)
    if choices["tts"].provider == "cartesia" and wanted != (cartesia.language, cartesia.voice_id):
        update = {"language": language.tts_language, "voice_id": voice}
        tts = _cartesia(cartesia.model_copy(update=update), http, base.tts)
    return Providers(stt=stt, llm=base.llm, tts=tts, cache=base.cache)


def _cartesia(
    settings: CartesiaSettings, http: httpx.AsyncClient, sharing: TextToSpeech | None = None
) -> TextToSpeech:
    """Cartesia over ``CARTESIA_TRANSPORT``: the WebSocket (the default) or SSE. Another
    language's voice shares ``sharing``'s sockets: one Cartesia socket per process."""
    if settings.transport == "websocket":
        if isinstance(sharing, CartesiaWebSocketTTS):
            return sharing.speaking(settings)
        return CartesiaWebSocketTTS(settings)
    return CartesiaTTS(settings, http=http)


def tts_status(tts: object) -> dict[str, Any] | None:
    """Cartesia's transport and, over the WebSocket, its sockets (for ``/health``)."""
    inner = unwrap(tts)
    if isinstance(inner, CartesiaWebSocketTTS | CartesiaTTS):
        return inner.status()
    return None
