"""One event loop's VAD windows, from every call, scored together in one ONNX run.

Each call's detector awaits :meth:`VadBatcher.score` for one window at a time (its next
window needs the state this one produces). The first window of a batch arms a timer of
``linger_s`` (about a third of a window): windows from other calls that arrive meanwhile
join it, one line per sample rate. When the timer fires the line goes to the model's
worker thread as one ``run``; windows that arrive while it runs wait for it and go in
the next batch, sent the moment it ends. The line goes early when every stream that
sent a window in the last window period is already in it: nobody else is coming, so a
lone call never lingers. So at low load a window waits one small run, and at high load
the batches grow instead of the queue of runs (each run costs ~0.1 ms plus a thread
hand-off, each window in it ~40-70 µs: at 50 calls a 12 ms linger scores 5.6 windows a
run instead of 2.3 with 4 ms, and the VAD's CPU drops 0.24 -> 0.15 s per call-minute).

Nothing here is a task: a timer handle and at most one executor job in flight. A call
that stops waiting (cancelled) leaves the line; if its window is already in a run, the
result is dropped. Each detector has at most one window waiting, so a line holds at most
one window per live call; ``MAX_WAITING`` bounds it anyway.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

from audio.vad_model import VAD_RATES, WINDOW

if TYPE_CHECKING:
    from audio.vad_model import SileroVadModel

__all__ = ["MAX_WAITING", "VadBatcher"]

Floats = npt.NDArray[np.float32]
Scored = tuple[float, Floats]  # a window's speech probability, the stream's next state

MAX_WAITING: Final = 4096  # windows waiting on one loop: far more than a box has calls


@dataclass(slots=True)
class _Window:
    row: Floats  # context + window, float32
    state: Floats  # [2, 128]
    future: asyncio.Future[Scored]
    seq: int = field(default=0)


class VadBatcher:
    """Batches windows from the calls on one event loop (see the module docstring)."""

    def __init__(self, model: SileroVadModel, linger_s: float, max_batch: int) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._model = model
        self._linger_s = linger_s
        self._max_batch = max_batch
        self._lines: dict[int, list[_Window]] = {rate: [] for rate in VAD_RATES}
        self._seq = itertools.count()
        # Who sent a window lately, per rate: (time, stream) in order, and a count per
        # stream, so "every recent stream is waiting" is a length compare.
        self._sent: dict[int, collections.deque[tuple[float, object]]] = {
            rate: collections.deque() for rate in VAD_RATES
        }
        self._recent: dict[int, collections.Counter[object]] = {
            rate: collections.Counter() for rate in VAD_RATES
        }
        # A bit under a window: a stream in real time sends one window per period.
        self._period = {rate: 0.9 * WINDOW[rate] / rate for rate in VAD_RATES}
        self._timer: asyncio.TimerHandle | None = None
        self._running: asyncio.Future[tuple[list[float], list[Floats]]] | None = None
        self.closed = False
        self.runs = 0  # batches sent to the model from this loop
        self.windows = 0  # windows in them
        self.largest = 0  # the largest batch

    @property
    def waiting(self) -> int:
        return sum(len(line) for line in self._lines.values())

    async def score(
        self, rate: int, row: Floats, state: Floats, stream: object | None = None
    ) -> Scored:
        """Score one window (``row``: its context then the window) from ``state``.

        ``stream`` names the caller's stream (its detector), so a batch need not wait for a
        stream whose window is already in it; None counts as a stream of its own.
        ``row`` and ``state`` must stay untouched until this returns.
        """
        if self.closed:
            raise RuntimeError("the VAD batcher is closed")
        line = self._lines.get(rate)
        if line is None:
            raise ValueError(f"silero scores {VAD_RATES} Hz audio, not {rate}")
        if self.waiting >= MAX_WAITING:
            raise RuntimeError(f"the VAD is {MAX_WAITING} windows behind")
        loop = asyncio.get_running_loop()
        window = _Window(row, state, loop.create_future(), next(self._seq))
        line.append(window)
        streams = self._arrived(rate, object() if stream is None else stream, loop.time())
        if self._running is None:
            if len(line) >= self._max_batch or len(line) >= streams:
                self._flush()
            elif self._timer is None:
                self._timer = loop.call_later(self._linger_s, self._flush)
        return await window.future

    def _arrived(self, rate: int, stream: object, now: float) -> int:
        """Note ``stream``'s window; how many streams sent one within the last period."""
        sent, recent = self._sent[rate], self._recent[rate]
        sent.append((now, stream))
        recent[stream] += 1
        horizon = now - self._period[rate]
        while sent[0][0] < horizon:
            _, gone = sent.popleft()
            recent[gone] -= 1
            if not recent[gone]:
                del recent[gone]
        return len(recent)

    def _flush(self) -> None:
        """Send the line that waited longest to the worker thread (unless a run is on)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._running is not None or self.closed:
            return  # the run in flight sends the next batch when it ends
        for line in self._lines.values():  # callers who left the line
            line[:] = [w for w in line if not w.future.done()]
        waiting = [(line[0].seq, rate) for rate, line in self._lines.items() if line]
        if not waiting:
            return
        _, rate = min(waiting)
        line = self._lines[rate]
        batch, line[:] = line[: self._max_batch], line[self._max_batch :]
        job = asyncio.get_running_loop().run_in_executor(
            self._model.executor,
            self._model.run_streams,
            rate,
            [w.row for w in batch],
            [w.state for w in batch],
        )
        self._running = job
        self.runs += 1
        self.windows += len(batch)
        self.largest = max(self.largest, len(batch))
        job.add_done_callback(functools.partial(self._scored, batch))

    def _scored(
        self, batch: list[_Window], job: asyncio.Future[tuple[list[float], list[Floats]]]
    ) -> None:
        self._running = None
        if job.cancelled():
            for window in batch:
                window.future.cancel()
        elif (error := job.exception()) is not None:
            for window in batch:
                if not window.future.done():
                    window.future.set_exception(error)
        else:
            probabilities, states = job.result()
            for window, probability, state in zip(batch, probabilities, states, strict=True):
                if not window.future.done():
                    window.future.set_result((probability, state))
        if self.waiting and not self.closed:
            self._flush()  # they waited for this run already: no more lingering

    async def aclose(self) -> None:
        """Stop: waiting windows are cancelled, the run in flight is waited for."""
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for line in self._lines.values():
            for window in line:
                window.future.cancel()
            line.clear()
        for sent in self._sent.values():
            sent.clear()
        for recent in self._recent.values():
            recent.clear()
        if self._running is not None:
            await asyncio.wait({self._running})

    def stats(self) -> dict[str, float | int]:
        return {
            "runs": self.runs,
            "windows": self.windows,
            "largest": self.largest,
            "waiting_now": self.waiting,
        }
