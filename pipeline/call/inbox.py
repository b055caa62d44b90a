"""The call's turn-taking inbox: everything listening must react to, in arrival order;
and the local VAD that feeds it the caller's speech onsets and offsets.

Speech-to-text events, the local VAD's onsets and offsets, and *nudges* (the reply's
state may have changed: its audio started, its turn ended) go into one bounded queue
that the listening task reads; :meth:`Inbox.next` also wakes it at the next turn-taking
deadline (a barge-in window closing, the bot falling silent), on the call's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from audio.speech_segmenter import SegmenterSettings, SpeechEventKind
from audio.vad import SileroVadModel, VoiceActivityDetector
from config.logs import get_logger
from pipeline.providers.base import STTEvent, STTStream

log = get_logger("SESSION")

NUDGE = "nudge"
Input = STTEvent | bool | str | None  # STT event, VAD onset (True) / offset, nudge, STT ended
INBOX_SIZE = 256  # events arrive at speech rate; the listener drains them in microseconds


class Inbox:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._queue: asyncio.Queue[Input] = asyncio.Queue(maxsize=INBOX_SIZE)
        self._clock = clock

    def voice_activity(self, speech: bool) -> None:
        try:
            self._queue.put_nowait(speech)
        except asyncio.QueueFull:
            log.warning("Turn-taking inbox full; a VAD %s was dropped", speech)

    def nudge(self) -> None:
        with contextlib.suppress(asyncio.QueueFull):  # a full inbox wakes the listener anyway
            self._queue.put_nowait(NUDGE)

    async def read_stt(self, stt: STTStream) -> None:
        """Forward the recogniser's events, then None when its stream ends."""
        async for event in stt.events():
            await self._queue.put(event)
        await self._queue.put(None)

    async def next(self, due: float | None) -> Input:
        """The next input, or a nudge at ``due`` if nothing came before it."""
        if due is None:
            return await self._queue.get()
        try:
            async with asyncio.timeout(max(0.005, due - self._clock())):
                return await self._queue.get()
        except TimeoutError:
            return NUDGE


class CallerVoice:
    """The local VAD on one call's caller audio: onsets and offsets into the inbox.

    Its model instance comes from the process's pool (:class:`audio.vad.SileroVadModel`):
    an idle one at once, else one built off the event loop. Scoring runs on the loop
    (~0.1 ms of native code per 32 ms window); ``busy_s`` adds up that time, so the call
    summary can say what the VAD cost the call.
    """

    def __init__(self, inbox: Inbox, sample_rate: int, settings: SegmenterSettings) -> None:
        self._inbox = inbox
        self._rate = sample_rate
        self._settings = settings
        self._detector: VoiceActivityDetector | None = None
        self._speaking = False
        self.busy_s = 0.0

    async def open(self, model: SileroVadModel) -> bool:
        """Take a model instance for this call; False (logged) if none can be had."""
        rate = VoiceActivityDetector.vad_rate(self._rate)
        try:
            engine = model.try_acquire(rate)
            if engine is None:
                engine = await asyncio.to_thread(model.acquire, rate)
            self._detector = VoiceActivityDetector(model, engine, self._rate, self._settings)
        except Exception:  # a broken install must not cost the call: words still barge in
            log.exception("Local VAD unavailable for this call; barge-in waits for words")
            return False
        return True

    def hear(self, pcm: bytes) -> None:
        detector = self._detector
        if detector is None:
            return
        started = time.perf_counter()
        events = detector.push(pcm)
        self.busy_s += time.perf_counter() - started
        for event in events:
            if event.cut:
                continue  # a long utterance cut in two: the caller is still talking
            speaking = event.kind is SpeechEventKind.START
            if speaking != self._speaking:
                self._speaking = speaking
                self._inbox.voice_activity(speaking)

    def close(self) -> None:
        detector, self._detector = self._detector, None
        if detector is not None:
            detector.close()
