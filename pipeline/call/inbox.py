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
from collections.abc import Callable

from audio.speech_segmenter import SegmenterSettings, SpeechEventKind
from audio.vad import WINDOW_MS, SileroVadModel, VoiceActivityDetector
from config.logs import get_logger
from pipeline.providers.base import STTEvent, STTStream

log = get_logger("SESSION")

NUDGE = "nudge"
Input = STTEvent | bool | str | None  # STT event, VAD onset (True) / offset, nudge, STT ended
INBOX_SIZE = 256  # events arrive at speech rate; the listener drains them in microseconds
# Caller audio quieter than this is not scored by the VAD (it is not speech): phone line
# hiss sits near -60 dBFS and below, the softest consonants of speech near -45.
QUIET_DBFS = -55.0


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

    The detector's state is a few KB; its windows are scored by the process's one silero
    model (:class:`audio.vad.SileroVadModel`), batched with the other calls' and run off
    the event loop. ``hear`` awaits that (a few ms, only for windows above the quiet gate);
    ``scored`` and ``windows`` count the windows the model scored and all the call's
    windows, so the call summary can say what the VAD cost it. A failure of the model
    turns the VAD off for the call (logged): barge-in then waits for the caller's words.
    """

    def __init__(self, inbox: Inbox, sample_rate: int, settings: SegmenterSettings) -> None:
        self._inbox = inbox
        self._rate = sample_rate
        self._settings = settings
        self._detector: VoiceActivityDetector | None = None
        self._speaking = False
        self._heard: VoiceActivityDetector | None = None  # kept after close, for its counts

    async def open(self, model: SileroVadModel) -> bool:
        """Start listening with the process's model; False (logged) if it cannot be had."""
        try:
            if not model.loaded:  # normally warmed at start-up: load it off the loop
                await asyncio.to_thread(model.load)
            self._detector = self._heard = VoiceActivityDetector(
                model, self._rate, self._settings, quiet_dbfs=QUIET_DBFS
            )
        except Exception:  # a broken install must not cost the call: words still barge in
            log.exception("Local VAD unavailable for this call; barge-in waits for words")
            return False
        return True

    async def hear(self, pcm: bytes) -> None:
        detector = self._detector
        if detector is None:
            return
        try:
            events = await detector.push(pcm)
        except Exception:
            log.exception("Local VAD failed; barge-in waits for words for the rest of the call")
            self.close()
            return
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

    @property
    def scored(self) -> int:
        """Windows the model scored for this call."""
        return 0 if self._heard is None else self._heard.scored

    @property
    def windows(self) -> int:
        """The call's windows, scored or quiet."""
        return 0 if self._heard is None else int(self._heard.position_ms // WINDOW_MS)
