"""A caller's phone line: 20 ms PCM frames on an absolute real-time schedule.

Speech is sent when queued with :meth:`Line.say`, silence otherwise, for the whole call,
exactly like a Stream Node. The line records when each utterance's first and last frame
went out, and how far behind schedule a frame ever was (the callers process's own lag).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from server.simulator import StreamNodeClient

FRAME_MS = 20


class Line:
    def __init__(self, node: StreamNodeClient, sample_rate: int) -> None:
        self._node = node
        self._frame_bytes = sample_rate * 2 * FRAME_MS // 1000
        self._silence = bytes(self._frame_bytes)
        self._speech = bytearray()
        self._done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.speech_started_at: float | None = None
        self.speech_ended_at: float | None = None
        self.max_lag_ms = 0.0
        self.frames = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="line")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def say(self, pcm: bytes) -> None:
        """Queue an utterance; its frames follow the current one."""
        self._speech.extend(pcm)
        self.speech_started_at = None
        self.speech_ended_at = None
        self._done.clear()

    async def said(self, timeout: float) -> float:  # noqa: ASYNC109
        """Wait for the queued speech to be on the wire; its last frame's send time."""
        await asyncio.wait_for(self._done.wait(), timeout)
        assert self.speech_ended_at is not None
        return self.speech_ended_at

    async def _run(self) -> None:
        frame_s = FRAME_MS / 1000
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
            except Exception:  # the call ended under us; the caller records why
                return
            now = time.monotonic()
            if frame is not self._silence:
                if self.speech_started_at is None:
                    self.speech_started_at = now
                if not self._speech:
                    self.speech_ended_at = now
                    self._done.set()
            lag = now - (start + self.frames * frame_s)
            if lag * 1000 > self.max_lag_ms:
                self.max_lag_ms = lag * 1000
            self.frames += 1
            delay = start + self.frames * frame_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
