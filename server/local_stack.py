"""The keyless mode's side of the composition root: local builders, agent file, warm-up.

:func:`register` puts a builder for each stage whose local provider is installed (the
``local`` extra) into :data:`server.providers.LOCAL_PROVIDERS`; ``choose`` then picks it
where the settings ask for it. Model weights are per process (``MoonshineModel.shared()``,
``PiperVoiceModel.shared()``, ``SileroVadModel.shared()``), so a second app in the same
process (the test suite starts many) loads nothing again; each provider owns its worker
pool, which lives on its app's event loop and is closed by the provider's ``aclose()``.
"""

from __future__ import annotations

import time
from importlib.util import find_spec
from typing import Any

from audio.speech_segmenter import SegmenterSettings
from audio.vad import SileroVadModel
from config.logs import get_logger
from config.settings import Settings
from pipeline.agent_file import AgentFile, load_agent_file
from pipeline.call.providers import Providers
from pipeline.inference_pool import InferencePool
from pipeline.providers.faq_agent import FaqAgent
from pipeline.providers.local_stt import LocalSTT, LocalSTTSettings
from pipeline.providers.moonshine_model import MoonshineModel
from pipeline.providers.moonshine_worker import MoonshineWorker
from pipeline.providers.piper_tts import PiperTTS, PiperVoiceModel
from server.metered import unwrap
from server.providers import LOCAL_PROVIDERS, Choice, Stage

log = get_logger("LOCAL")


def installed() -> dict[Stage, bool]:
    """Whether each stage's local provider can be imported (the ``local`` extra)."""
    return {
        "stt": MoonshineModel.available() and SileroVadModel.available(),
        "llm": find_spec("rapidfuzz") is not None,
        "tts": PiperVoiceModel.available(),
    }


def register() -> None:
    """Offer the composition root a builder for every installed local stage (idempotent)."""
    builders = {"stt": build_stt, "llm": build_llm, "tts": build_tts}
    for stage, ok in installed().items():
        if ok:
            LOCAL_PROVIDERS[stage] = builders[stage]


def load_agent(settings: Settings, choices: dict[Stage, Choice]) -> AgentFile | None:
    """``AGENT_FILE`` if set; else, for the FAQ agent, the example agent in ``agents/``.

    Raises AgentFileError (with the file and line) when the file cannot be used.
    """
    if settings.agent.agent_file is not None:
        return load_agent_file(settings.agent.agent_file)
    if choices["llm"].provider == "local":
        from agents import EXAMPLE

        return load_agent_file(EXAMPLE)
    return None


def build_stt(settings: Settings) -> LocalSTT:
    local = settings.local
    segmenter = SegmenterSettings(
        threshold=local.vad_threshold,
        hysteresis=min(0.15, local.vad_threshold / 2),
        start_ms=local.vad_start_ms,
        end_ms=local.vad_end_ms,
        max_utterance_ms=int(local.local_stt_max_utterance_s * 1000),
    )
    return LocalSTT(
        MoonshineWorker.shared(local.local_stt_recycle_after),  # leaks: recycled child process
        SileroVadModel.shared(),  # one session for every app and call in the process
        InferencePool("local-stt", local.local_stt_workers),
        LocalSTTSettings(segmenter, local.local_stt_interim_ms),
    )


def build_llm(settings: Settings) -> FaqAgent:
    agent = settings.agent.agent_file
    if agent is None:
        from agents import EXAMPLE

        agent = EXAMPLE
    return FaqAgent(load_agent_file(agent))


def build_tts(settings: Settings) -> PiperTTS:
    voice = PiperVoiceModel.shared(settings.local.local_tts_voice)
    return PiperTTS(voice, InferencePool("local-tts", settings.local.local_tts_workers))


def needs_warming(providers: Providers) -> bool:
    stt, tts = unwrap(providers.stt), unwrap(providers.tts)
    return isinstance(stt, LocalSTT) or isinstance(tts, PiperTTS)


async def warm(providers: Providers) -> None:
    """Load and warm the local models in use (off the loop), once per process."""
    started = time.monotonic()
    stt, tts = unwrap(providers.stt), unwrap(providers.tts)
    if isinstance(tts, PiperTTS):
        await tts.warm()
    if isinstance(stt, LocalSTT):
        await stt.warm()
    log.info("Local models ready in %.0f ms", (time.monotonic() - started) * 1000)


def stats(providers: Providers) -> dict[str, Any] | None:
    """For /health and the benchmark: each local pool's work, waits and audio."""
    out: dict[str, Any] = {}
    stt, tts = unwrap(providers.stt), unwrap(providers.tts)
    if isinstance(stt, LocalSTT):
        out["local-stt"] = stt.stats()
    if isinstance(tts, PiperTTS):
        out["local-tts"] = tts.stats()
    return out or None
