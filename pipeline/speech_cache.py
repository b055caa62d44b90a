"""Synthesised audio for fixed lines (greeting, hand-off, apologies), kept in memory.

A cached line costs no TTS round trip, and still plays when the TTS provider is down.
Concurrent requests for the same line share one synthesis.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator

from config.logs import get_logger
from pipeline.providers.base import ProviderError, TextToSpeech
from pipeline.retry import RetryPolicy

log = get_logger("SESSION")


class SpeechCache:
    def __init__(self, max_entries: int = 64) -> None:
        self._entries: OrderedDict[tuple[str, ...], bytes] = OrderedDict()
        self._max_entries = max_entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, tts: TextToSpeech, text: str, sample_rate: int) -> bytes | None:
        key = tts.cache_key(text, sample_rate)
        pcm = self._entries.get(key)
        if pcm is not None:
            self._entries.move_to_end(key)
        return pcm

    def put(self, tts: TextToSpeech, text: str, sample_rate: int, pcm: bytes) -> None:
        key = tts.cache_key(text, sample_rate)
        self._entries[key] = pcm
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget every line (tests use it to play a line that is not cached)."""
        self._entries.clear()

    async def stream(self, tts: TextToSpeech, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        """The line's audio: from memory if cached, else streamed live and remembered."""
        cached = self.get(tts, text, sample_rate)
        if cached is not None:
            yield cached
            return
        parts: list[bytes] = []
        async for pcm in tts.synthesize(text, sample_rate):
            parts.append(pcm)
            yield pcm
        self.put(tts, text, sample_rate, b"".join(parts))

    async def warm(self, tts: TextToSpeech, text: str, sample_rate: int) -> bytes:
        cached = self.get(tts, text, sample_rate)
        if cached is not None:
            return cached
        parts = [pcm async for pcm in tts.synthesize(text, sample_rate)]
        pcm = b"".join(parts)
        self.put(tts, text, sample_rate, pcm)
        return pcm


# A line that fails at start-up (a busy TTS, a timeout) is tried again: an apology that
# was never cached is an apology that cannot play while the TTS is down.
WARM_RETRY = RetryPolicy(base_s=0.25, cap_s=2.0, jitter="equal", max_attempts=4)


async def warm_lines(
    cache: SpeechCache, tts: TextToSpeech, lines: list[str], rates: list[int]
) -> None:
    """Synthesise every (line, rate) pair; one failure does not stop the others."""
    jobs = [_warm_one(cache, tts, line, rate) for line in lines for rate in rates if line]
    await asyncio.gather(*jobs)


async def _warm_one(cache: SpeechCache, tts: TextToSpeech, line: str, rate: int) -> None:
    failures = 0
    while True:
        try:
            await cache.warm(tts, line, rate)
            return
        except ProviderError as exc:
            failures += 1
            delay = WARM_RETRY.delay(failures, retry_after_s=exc.retry_after_s)
            if delay is None:
                log.error("Could not cache %r at %d Hz: %s", line[:40], rate, exc)
                return
            await asyncio.sleep(delay)
