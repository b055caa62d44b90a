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

from audio.speech_segmenter import SegmenterSettings, SpeechEvent, SpeechEventKind
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
    the event loop. :meth:`hear` only buffers: a task of the call feeds the detector, so
    the line's receive loop (and the audio's way to the STT) never waits for a model run.
    A VAD more than ``MAX_BEHIND_MS`` behind skips that audio as silence (an onset that
    late is no use to barge-in). ``scored`` and ``windows`` count the windows the model
    scored and all the call's windows, for the call summary. A failure of the model turns
    the VAD off for the call (logged): barge-in then waits for the caller's words.
    """

    MAX_BEHIND_MS = 1000
    CHUNK_MS = 40  # what one push hands the detector (a window and a bit, at most)

    def __init__(self, inbox: Inbox, sample_rate: int, settings: SegmenterSettings) -> None:
        self._inbox = inbox
        self._rate = sample_rate
        self._settings = settings
        self._detector: VoiceActivityDetector | None = None
        self._speaking = False
        self._heard: VoiceActivityDetector | None = None  # kept after close, for its counts
        self._audio = bytearray()
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._bytes_per_ms = sample_rate * 2 // 1000
        self._max_behind = self.MAX_BEHIND_MS * self._bytes_per_ms
        self._chunk = self.CHUNK_MS * self._bytes_per_ms
        self._owed_skip = 0  # bytes hear() dropped that the detector has not skipped yet
        self.skipped_ms = 0.0

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
        self._task = asyncio.create_task(self._listen(), name="caller-vad")
        return True

    def hear(self, pcm: bytes) -> None:
        """Caller audio for the VAD (buffered; never waits). Past ``MAX_BEHIND_MS`` of
        backlog the oldest audio is dropped here, so the buffer stays bounded even while a
        model run hangs; the feeding task tells the detector it was silence."""
        if self._detector is None:
            return
        self._audio += pcm
        excess = (len(self._audio) - self._max_behind) & ~1
        if excess > 0:
            drop = max(excess, (len(self._audio) - self._chunk) & ~1)
            del self._audio[:drop]
            if self._owed_skip == 0:  # one line per stall
                log.warning("VAD over %d ms behind: skipping it as silence", self.MAX_BEHIND_MS)
            self._owed_skip += drop
            self.skipped_ms += drop / self._bytes_per_ms
        self._arrived.set()

    async def _listen(self) -> None:
        while (detector := self._detector) is not None:
            await self._arrived.wait()
            self._arrived.clear()
            while self._detector is not None and (self._owed_skip or self._audio):
                if self._owed_skip:  # dropped by hear(): older than what is buffered
                    skip, self._owed_skip = self._owed_skip, 0
                    self._react(detector.skip(skip))
                    continue
                take = min(len(self._audio), self._chunk) & ~1
                pcm = bytes(self._audio[:take])
                del self._audio[:take]
                try:
                    events = await detector.push(pcm)
                except Exception:
                    log.exception(
                        "Local VAD failed; barge-in waits for words for the rest of the call"
                    )
                    self._stop()
                    return
                self._react(events)

    def _react(self, events: list[SpeechEvent]) -> None:
        for event in events:
            if event.cut:
                continue  # a long utterance cut in two: the caller is still talking
            speaking = event.kind is SpeechEventKind.START
            if speaking != self._speaking:
                self._speaking = speaking
                self._inbox.voice_activity(speaking)

    def _stop(self) -> None:
        detector, self._detector = self._detector, None
        self._audio.clear()
        self._owed_skip = 0
        if detector is not None:
            detector.close()

    async def aclose(self) -> None:
        """Stop listening: the feeding task is cancelled and awaited."""
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._stop()

    @property
    def scored(self) -> int:
        """Windows the model scored for this call."""
        return 0 if self._heard is None else self._heard.scored

    @property
    def windows(self) -> int:
        """The call's windows, scored or quiet."""
        return 0 if self._heard is None else int(self._heard.position_ms // WINDOW_MS)
