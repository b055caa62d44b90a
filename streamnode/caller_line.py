"""The caller's side of a live call: their audio, on the Stream Node's real-time clock."""

from __future__ import annotations

import asyncio
import contextlib
import time
from types import TracebackType
from typing import Self

from websockets.exceptions import ConnectionClosed

from streamnode.client import StreamNodeClient


class CallerLine:
    """The caller's side of a live call: 20 ms frames on an absolute real-time schedule.

    A Stream Node streams audio for the whole call, silence included; speech queued with
    :meth:`say` replaces silence frame by frame. ``async with CallerLine(node, rate)``
    (or :meth:`start`/:meth:`stop`) runs it; the end-to-end tests and the benchmark share it.
    """

    def __init__(self, node: StreamNodeClient, sample_rate: int, frame_ms: int = 20) -> None:
        self._node = node
        self._frame_s = frame_ms / 1000
        self._frame_bytes = sample_rate * 2 * frame_ms // 1000
        self._silence = bytes(self._frame_bytes)
        self._speech = bytearray()
        self._done = asyncio.Event()
        self._begun = asyncio.Event()  # the first frame of the last utterance is on the wire
        self._task: asyncio.Task[None] | None = None
        self.speech_started_at: float | None = None  # first frame of the last utterance sent
        self.speech_ended_at: float | None = None  # ... and its last frame
        self.max_lag_ms = 0.0  # how late a frame ever went out (this process's own lag)
        self.frames = 0

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="caller-line")

    async def stop(self) -> None:
        """Stop sending (the caller hangs up, or the test is done)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    hang_up = stop

    def say(self, pcm: bytes) -> None:
        """Queue an utterance; its frames follow the current one."""
        self._speech.extend(pcm)
        self.speech_started_at = None
        self.speech_ended_at = None
        self._begun.clear()
        self._done.clear()

    async def speech_start(self, timeout: float = 30.0) -> float:  # noqa: ASYNC109
        """Wait until the queued speech starts going out; returns its first frame's send time.

        Frames leave on the line's own 20 ms clock, so right after :meth:`say` the speech
        may not have started yet (later still when this process is busy): wait, never guess.
        """
        await asyncio.wait_for(self._begun.wait(), timeout)
        assert self.speech_started_at is not None
        return self.speech_started_at

    async def said(self, timeout: float = 30.0) -> float:  # noqa: ASYNC109
        """Wait until the queued speech is on the wire; returns its last frame's send time."""
        await asyncio.wait_for(self._done.wait(), timeout)
        assert self.speech_ended_at is not None
        return self.speech_ended_at

    async def _run(self) -> None:
        size = self._frame_bytes
        start = time.monotonic()
        while not self._node.closed:
            if self._speech:
                frame = bytes(self._speech[:size])
                del self._speech[:size]
                if len(frame) < size:
                    frame += bytes(size - len(frame))
            else:
                frame = self._silence
            try:
                await self._node.send_audio(frame)
            except ConnectionClosed:
                return  # the call ended under us; the client records how
            now = time.monotonic()
            if frame is not self._silence:
                if self.speech_started_at is None:
                    self.speech_started_at = now
                    self._begun.set()
                if not self._speech:
                    self.speech_ended_at = now
                    self._done.set()
            lag_ms = (now - (start + self.frames * self._frame_s)) * 1000
            self.max_lag_ms = max(self.max_lag_ms, lag_ms)
            self.frames += 1
            delay = start + self.frames * self._frame_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
