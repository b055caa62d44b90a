"""The keyless providers of one app: the chosen local stages, their worker pools, warm-up.

Model weights are per process (``MoonshineModel.shared()``, ``PiperVoiceModel.shared()``,
one VAD pool), so a second app in the same process (the test suite starts many) loads
nothing again. Worker pools belong to the app: they live on its event loop.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from audio.speech_segmenter import SegmenterSettings
from audio.vad import SileroVadModel
from config.logs import get_logger
from config.settings import Settings
from pipeline.agent_file import AgentFile, load_agent_file
from pipeline.inference_pool import InferencePool
from pipeline.providers.faq_agent import FaqAgent
from pipeline.providers.local_stt import LocalSTT, LocalSTTSettings
from pipeline.providers.moonshine_model import MoonshineModel
from pipeline.providers.piper_tts import PiperTTS, PiperVoiceModel
from server.provider_choice import ProviderChoice, Stage

log = get_logger("LOCAL")


def load_agent(settings: Settings, choice: ProviderChoice) -> AgentFile | None:
    """``AGENT_FILE`` if set; else, for the FAQ agent, the example agent in ``agents/``.

    Raises AgentFileError (with the file and line) when the file cannot be used.
    """
    if settings.agent_file is not None:
        return load_agent_file(settings.agent_file)
    if choice.llm.provider == "local":
        from agents import EXAMPLE

        return load_agent_file(EXAMPLE)
    return None


def local_installed() -> dict[Stage, bool]:
    """Whether each stage's local provider can be imported (the ``local`` extra)."""
    from importlib.util import find_spec

    return {
        "stt": MoonshineModel.available() and SileroVadModel.available(),
        "llm": find_spec("rapidfuzz") is not None,
        "tts": PiperVoiceModel.available(),
    }


class LocalStack:
    def __init__(
        self, settings: Settings, choice: ProviderChoice, agent_file: AgentFile | None
    ) -> None:
        self.vad = SileroVadModel.shared()  # pooled across apps and calls
        self.stt: LocalSTT | None = None
        self.llm: FaqAgent | None = None
        self.tts: PiperTTS | None = None
        self._pools: list[InferencePool] = []
        self._voice: PiperVoiceModel | None = None
        if choice.stt.provider == "local":
            pool = self._pool("local-stt", settings.local_stt_workers)
            segmenter = SegmenterSettings(
                threshold=settings.vad_threshold,
                hysteresis=min(0.15, settings.vad_threshold / 2),
                start_ms=settings.vad_start_ms,
                end_ms=settings.vad_end_ms,
                max_utterance_ms=int(settings.local_stt_max_utterance_s * 1000),
            )
            stt_settings = LocalSTTSettings(segmenter, settings.local_stt_interim_ms)
            self.stt = LocalSTT(MoonshineModel.shared(), self.vad, pool, stt_settings)
        if choice.llm.provider == "local":
            assert agent_file is not None, "the FAQ agent needs an agent file"
            self.llm = FaqAgent(agent_file)
        if choice.tts.provider == "local":
            pool = self._pool("local-tts", settings.local_tts_workers)
            self._voice = PiperVoiceModel.shared(settings.local_tts_voice)
            self.tts = PiperTTS(self._voice, pool)

    def _pool(self, name: str, workers: int) -> InferencePool:
        pool = InferencePool(name, workers)
        self._pools.append(pool)
        return pool

    async def warm(self) -> None:
        """Load and warm every local model this app uses (off the loop), once per process."""
        started = time.monotonic()
        if self._voice is not None and not self._voice.loaded:
            await asyncio.to_thread(self._voice.warm)
        if self.stt is not None:
            model = MoonshineModel.shared()
            if not model.loaded:
                await asyncio.to_thread(model.warm)
            if self.vad.idle(8000) == 0 or self.vad.idle(16000) == 0:
                await asyncio.to_thread(self.vad.warm, 2)
        log.info("Local models ready in %.0f ms", (time.monotonic() - started) * 1000)

    def stats(self) -> dict[str, Any]:
        """For /health and the benchmark: work done and waits, per pool."""
        out: dict[str, Any] = {}
        for pool in self._pools:
            out[pool.name] = {
                "workers": pool.workers,
                "jobs": pool.jobs,
                "waited": pool.waited,
                "waiting_now": pool.waiting,
                "busy_s": round(pool.busy_s, 3),
            }
        if self.stt is not None:
            out["local-stt"]["audio_s"] = round(self.stt.audio_s, 3)
            out["vad_instances"] = self.vad.built
        if self.tts is not None:
            out["local-tts"]["audio_s"] = round(self.tts.audio_s, 3)
        return out

    def close(self) -> None:
        for pool in self._pools:
            pool.close()
