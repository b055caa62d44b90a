"""Keyless speech to text: silero VAD decides the turns, Moonshine transcribes them.

Moonshine transcribes whole utterances, so the VAD (:mod:`audio.vad`) runs on every
caller frame as it arrives and decides where an utterance starts and ends:

- onset (``VAD_START_MS`` of speech) -> ``SPEECH_STARTED``;
- once ``LOCAL_STT_INTERIM_MS`` of the utterance has been heard, one early transcription
  of the audio so far -> ``INTERIM`` with its words (it is what lets the caller barge in
  over the bot before they stop talking). Only when a worker is idle and the model runs
  well ahead of real time (``MAX_INTERIM_RTF``, measured on recent jobs): a job cannot be
  stopped once it runs, so on a loaded CPU an interim that outlasts the utterance would
  make its final wait behind it, doubling the reply's delay for words nobody uses;
- end (``VAD_END_MS`` of silence) -> the utterance (with a short pre-roll before the
  onset and a short tail) is transcribed off the event loop in the shared worker pool
  -> ``FINAL`` with ``speech_final=True``. The transcription starts speculatively after
  the first ``SPECULATE_MS`` of that silence when a worker is idle, so it overlaps the
  rest of the endpointing wait; if the caller speaks again before the end, the guess is
  dropped.

Finals come out in utterance order (one transcriber task per call, a short bounded line
of utterances). Per-call state is the VAD's state (a few KB; the model is the process's
one, its windows batched with every other call's off the loop) and a few seconds of PCM.
``send_audio`` only buffers: a VAD task per call feeds the buffer to the detector and
reacts to its events; a VAD more than ``MAX_VAD_BEHIND_MS`` behind skips that audio as
silence (the box is overloaded) rather than let the buffer grow.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from audio.speech_segmenter import SegmenterSettings, SpeechEvent, SpeechEventKind
from audio.vad import SileroVadModel, VoiceActivityDetector
from config.logs import get_logger
from pipeline.aio import cancel_and_wait
from pipeline.inference_pool import InferencePool
from pipeline.providers.base import STTEvent, STTEventKind
from pipeline.providers.moonshine_model import MoonshineModel
from pipeline.providers.moonshine_worker import MoonshineWorker

log = get_logger("MOONSHINE")

PREROLL_MS = 200  # audio kept before the VAD onset: the first phoneme starts softly
TAIL_MS = 150  # audio kept after the speech end
MAX_PENDING_UTTERANCES = 4  # a caller this far ahead of the transcriber loses the oldest
MAX_EVENTS = 256
SPECULATE_MS = 240  # quiet this long: start transcribing, in case it is the end (commas: less)
MAX_VAD_BEHIND_MS = 10_000  # caller audio the VAD may have left to score (bounded buffer)
VAD_CHUNK_MS = 320  # the VAD task scores at most this much audio per push
# Interims only while a transcription takes at most this many seconds per second of audio
# (recent jobs, smoothed): ~0.25 on an idle 2-core box, 0.7 and more on a loaded one.
MAX_INTERIM_RTF = 0.5
RTF_SMOOTHING = 0.3  # weight of the latest job in the running real-time factor


@dataclass(frozen=True, slots=True)
class LocalSTTSettings:
    segmenter: SegmenterSettings = field(default_factory=SegmenterSettings)
    interim_ms: int = 600  # 0: no early transcription (barge-in then waits for the final)


@dataclass(slots=True)
class _Utterance:
    number: int
    pcm: bytes
    ended_at: float  # monotonic time the VAD confirmed the end
    guess: asyncio.Task[str | None] | None = None  # its transcription, started before the end


@dataclass(slots=True)
class _Guess:
    number: int  # the utterance
    end: int  # stream byte offset the audio was cut at
    task: asyncio.Task[str | None]  # None: no worker was free, nothing was guessed


class LocalSTT:
    """``SpeechToText`` on the local models; ``name`` is what /health and logs show."""

    name = "local"

    def __init__(
        self,
        model: MoonshineModel | MoonshineWorker,
        vad: SileroVadModel,
        pool: InferencePool,
        settings: LocalSTTSettings | None = None,
    ) -> None:
        self._model = model
        self._vad = vad
        self._pool = pool
        self._settings = settings or LocalSTTSettings()
        self.audio_s = 0.0  # speech transcribed so far (finals), for the real-time factor
        self.rtf: float | None = None  # seconds per second of audio, recent jobs (smoothed)
        self.interims_skipped = 0  # early transcripts left out because the model was slow

    @asynccontextmanager
    async def stream(self, sample_rate: int) -> AsyncIterator[LocalSTTStream]:
        if not self._vad.loaded:  # normally warmed at start-up
            await asyncio.to_thread(self._vad.load)
        detector = VoiceActivityDetector(self._vad, sample_rate, self._settings.segmenter)
        stream = LocalSTTStream(self, detector, sample_rate, self._settings)
        try:
            yield stream
        finally:
            await stream.aclose()

    async def warm(self) -> None:
        """Load and warm Moonshine and the VAD, off the loop (once per process)."""
        if not self._model.loaded:
            await asyncio.to_thread(self._model.warm)
        if not self._vad.loaded:
            await asyncio.to_thread(self._vad.warm)

    def stats(self) -> dict[str, float | int]:
        return {
            **self._pool.stats(),
            "audio_s": round(self.audio_s, 3),
            **self._vad.stats(),
            "rtf": -1.0 if self.rtf is None else round(self.rtf, 3),
            "interims_skipped": self.interims_skipped,
        }

    async def aclose(self) -> None:
        self._pool.close()

    @property
    def fast(self) -> bool:
        """Whether an optional early transcription is likely to finish while it matters."""
        return self.rtf is None or self.rtf <= MAX_INTERIM_RTF

    def _job(self, pcm: bytes, sample_rate: int) -> Callable[[], str]:
        """The transcription as a pool job that also measures the model's current speed."""

        def run() -> str:
            started = time.monotonic()
            text = self._model.transcribe_pcm(pcm, sample_rate)
            audio_s = len(pcm) / (2 * sample_rate)
            if audio_s > 0:
                self._measured((time.monotonic() - started) / audio_s)
            return text

        return run

    def _measured(self, rtf: float) -> None:
        was_fast = self.fast
        self.rtf = rtf if self.rtf is None else self.rtf + RTF_SMOOTHING * (rtf - self.rtf)
        if was_fast != self.fast:
            log.info(
                "Transcribing at %.2f s per audio second: early transcripts %s",
                self.rtf,
                "on again" if self.fast else f"off until it is under {MAX_INTERIM_RTF}",
            )

    async def transcribe(self, pcm: bytes, sample_rate: int, what: str) -> str:
        return await self._pool.run(what, self._job(pcm, sample_rate))

    async def transcribe_if_idle(self, pcm: bytes, sample_rate: int) -> str | None:
        return await self._pool.run_if_idle(self._job(pcm, sample_rate))


class LocalSTTStream:
    def __init__(
        self,
        stt: LocalSTT,
        detector: VoiceActivityDetector,
        sample_rate: int,
        settings: LocalSTTSettings,
    ) -> None:
        self._stt = stt
        self._detector = detector
        self._rate = sample_rate
        self._bytes_per_ms = sample_rate * 2 / 1000
        self._interim_ms = settings.interim_ms
        keep_ms = settings.segmenter.start_ms + PREROLL_MS + 100
        self._idle_keep = int(keep_ms * self._bytes_per_ms) & ~1
        self._audio = bytearray()  # recent caller PCM at the call's rate
        self._audio_start = 0  # stream byte offset of _audio[0]
        self._received = 0  # stream bytes received
        self._fed = 0  # stream bytes handed to the VAD
        self._max_behind = int(MAX_VAD_BEHIND_MS * self._bytes_per_ms) & ~1
        self._chunk = int(VAD_CHUNK_MS * self._bytes_per_ms) & ~1
        self._arrived = asyncio.Event()  # audio the VAD has not seen
        self._utterance_start: int | None = None  # stream byte offset, while speaking
        self._utterances = 0
        self._interim_for: int | None = None  # utterance number an interim was started for
        self._events: asyncio.Queue[STTEvent | None] = asyncio.Queue(MAX_EVENTS)
        self._pending: asyncio.Queue[_Utterance] = asyncio.Queue(MAX_PENDING_UTTERANCES)
        self._transcriber = asyncio.create_task(self._transcribe_finals(), name="stt-finals")
        self._interim: asyncio.Task[None] | None = None
        self._guess: _Guess | None = None
        self._speculate_ms = min(SPECULATE_MS, settings.segmenter.end_ms / 2)
        self._closed = False
        self._listener = asyncio.create_task(self._listen(), name="stt-vad")

    # -- STTStream ------------------------------------------------------------------------

    def send_audio(self, pcm: bytes) -> None:
        if self._closed or not pcm:
            return
        self._audio += pcm
        self._received += len(pcm)
        self._arrived.set()

    async def events(self) -> AsyncIterator[STTEvent]:
        while (event := await self._events.get()) is not None:
            yield event

    # -- VAD ------------------------------------------------------------------------------

    async def _listen(self) -> None:
        """The VAD on the buffered audio, in order; its events, then what they lead to."""
        try:
            while True:
                await self._arrived.wait()
                self._arrived.clear()
                while self._fed < self._received:
                    behind = self._received - self._fed
                    if behind > self._max_behind:
                        skip = (behind - self._chunk) & ~1
                        log.warning(
                            "VAD %.0f ms behind: skipping it as silence",
                            behind / self._bytes_per_ms,
                        )
                        events = self._detector.skip(skip)
                        self._fed += skip
                    else:
                        end = min(self._received, self._fed + self._chunk)
                        pcm = self._slice(self._fed, end)
                        events = await self._detector.push(pcm)
                        self._fed = end
                    for event in events:
                        self._on_vad(event)
                    self._heard()
        except Exception:  # the model failed: nothing can end an utterance now
            log.exception("The VAD failed; local speech recognition stops for this call")
            with contextlib.suppress(asyncio.QueueFull):
                self._events.put_nowait(None)

    def _heard(self) -> None:
        """After the VAD has scored up to ``_fed``: trim, speculate, interim."""
        if self._utterance_start is None:
            excess = (self._fed - self._idle_keep - self._audio_start) & ~1
            if excess > 0:
                del self._audio[:excess]
                self._audio_start += excess
            return
        self._speculate()
        talking = self._detector.segmenter.silence_ms == 0  # a pause may be the end
        if self._interim_ms > 0 and talking and self._interim_for != self._utterances:
            heard_ms = (self._fed - self._utterance_start) / self._bytes_per_ms
            if heard_ms >= self._interim_ms + PREROLL_MS:
                self._start_interim()

    def _offset(self, at_ms: float) -> int:
        return int(at_ms * self._bytes_per_ms) & ~1

    def _slice(self, start: int, end: int) -> bytes:
        begin = max(0, start - self._audio_start)
        return bytes(self._audio[begin : max(begin, end - self._audio_start)])

    def _on_vad(self, event: SpeechEvent) -> None:
        if event.kind is SpeechEventKind.START:
            self._utterances += 1
            self._utterance_start = max(0, self._offset(event.at_ms - PREROLL_MS))
            self._emit(STTEvent(STTEventKind.SPEECH_STARTED))
            return
        start = self._utterance_start if self._utterance_start is not None else self._audio_start
        end = min(self._received, self._offset(event.at_ms + (0 if event.cut else TAIL_MS)))
        utterance = _Utterance(self._utterances, self._slice(start, end), time.monotonic())
        guess, self._guess = self._guess, None
        if guess is not None and guess.number == utterance.number and guess.end == end:
            utterance.guess = guess.task  # the caller did stop there: the work is under way
        elif guess is not None:
            guess.task.cancel()
        self._utterance_start = None
        if self._pending.full():
            dropped = self._pending.get_nowait()
            if dropped.guess is not None:
                dropped.guess.cancel()
            log.warning("Transcription is behind; dropped utterance %d", dropped.number)
        self._pending.put_nowait(utterance)

    def _speculate(self) -> None:
        """Start the final transcription early once the caller has paused a little."""
        segmenter = self._detector.segmenter
        quiet_from = segmenter.silence_started_ms
        guess = self._guess
        if quiet_from is None:
            if guess is not None:  # they spoke again: that was not the end
                guess.task.cancel()
                self._guess = None
            return
        if segmenter.silence_ms < self._speculate_ms:
            return
        end = self._offset(quiet_from + TAIL_MS)
        if end > self._received or (guess is not None and guess.end == end):
            return
        if guess is not None:
            guess.task.cancel()
        assert self._utterance_start is not None
        pcm = self._slice(self._utterance_start, end)
        # Only on an idle worker: under load a wrong guess would delay everyone's finals.
        task = asyncio.create_task(self._stt.transcribe_if_idle(pcm, self._rate), name="stt-guess")
        self._guess = _Guess(self._utterances, end, task)

    def _start_interim(self) -> None:
        self._interim_for = self._utterances
        if self._interim is not None and not self._interim.done():
            return  # the previous one is still running: skip this one
        if not self._stt.fast:  # it would likely outlast the utterance and delay its final
            self._stt.interims_skipped += 1
            return
        assert self._utterance_start is not None
        pcm = self._slice(self._utterance_start, self._received)
        self._interim = asyncio.create_task(
            self._run_interim(self._utterances, pcm), name="stt-interim"
        )

    async def _run_interim(self, number: int, pcm: bytes) -> None:
        text = await self._stt.transcribe_if_idle(pcm, self._rate)
        # Only while that utterance is still being spoken: after its end the final counts.
        if text and number == self._utterances and self._utterance_start is not None:
            log.info('Interim | text="%s"', text)
            self._emit(STTEvent(STTEventKind.INTERIM, text))

    async def _transcribe_finals(self) -> None:
        while True:
            utterance = await self._pending.get()
            seconds = len(utterance.pcm) / (self._bytes_per_ms * 1000)
            started = time.monotonic()
            what = f"utterance {utterance.number}"
            try:
                guessed = None if utterance.guess is None else await utterance.guess
                if guessed is None:
                    utterance.guess = None  # (for the log line below)
                    text = await self._stt.transcribe(utterance.pcm, self._rate, what)
                else:
                    text = guessed
            except Exception:  # a native failure: lose this utterance, not the call
                log.exception("Transcribing %s failed", what)
                continue
            done = time.monotonic()
            self._stt.audio_s += seconds
            log.info(
                'Final | audio_s=%.2f %s_ms=%.0f end_to_text_ms=%.0f text="%s"',
                seconds,
                "speculated_wait" if utterance.guess is not None else "stt",
                (done - started) * 1000,
                (done - utterance.ended_at) * 1000,
                text,
            )
            self._emit(STTEvent(STTEventKind.FINAL, text, speech_final=True))

    def _emit(self, event: STTEvent) -> None:
        try:
            self._events.put_nowait(event)
        except asyncio.QueueFull:  # nobody reads events: the call is ending anyway
            log.warning("Dropping a %s event: nobody is reading", event.kind.value)

    # -- end --------------------------------------------------------------------------------

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await cancel_and_wait(self._listener)
        guess = None if self._guess is None else self._guess.task
        for task in (self._transcriber, self._interim, guess):
            if task is not None:
                await cancel_and_wait(task)
        while not self._pending.empty():
            left = self._pending.get_nowait()
            if left.guess is not None:
                await cancel_and_wait(left.guess)
        self._detector.close()
        with contextlib.suppress(asyncio.QueueFull):
            self._events.put_nowait(None)
