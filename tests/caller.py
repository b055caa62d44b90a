"""A caller on a live phone line: continuous 20 ms frames, speech when asked, else silence."""

from __future__ import annotations

import asyncio
import contextlib
import time
from types import TracebackType

from server.simulator import StreamNodeClient

FRAME_MS = 20


class CallerLine:
    """Streams real-time audio to the node, like a Stream Node does for the whole call."""

    def __init__(self, node: StreamNodeClient, sample_rate: int) -> None:
        self._node = node
        self._frame_bytes = sample_rate * 2 * FRAME_MS // 1000
        self._silence = bytes(self._frame_bytes)
        self._speech: bytearray = bytearray()
        self._spoken = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.speech_ended_at: float | None = None

    async def __aenter__(self) -> CallerLine:
        self._task = asyncio.create_task(self._run(), name="caller-line")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.hang_up()

    async def hang_up(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def say(self, pcm: bytes) -> None:
        self._speech.extend(pcm)
        self._spoken.clear()

    async def said(self, timeout: float = 30.0) -> float:  # noqa: ASYNC109
        """Wait until the queued speech is on the wire; returns when it ended."""
        await asyncio.wait_for(self._spoken.wait(), timeout)
        assert self.speech_ended_at is not None
        return self.speech_ended_at

    async def _run(self) -> None:
        frame_s = FRAME_MS / 1000
        start = time.monotonic()
        sent = 0
        while True:
            if self._speech:
                frame = bytes(self._speech[: self._frame_bytes])
                del self._speech[: self._frame_bytes]
                if not self._speech:
                    self.speech_ended_at = time.monotonic()
                    self._spoken.set()
            else:
                frame = self._silence
            if self._node.closed:
                return
            await self._node.send_audio(frame)
            sent += 1
            delay = start + sent * frame_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)


async def wait_until_quiet(node: StreamNodeClient, timeout: float = 15.0) -> None:  # noqa: ASYNC109
    """Wait until everything the bot sent has played at the (simulated) Stream Node."""
    async with asyncio.timeout(timeout):
        # The playback clock is a computed deadline, not an event: sleep until it passes.
        while node.is_playing:  # noqa: ASYNC110
            await asyncio.sleep(max(0.02, node.playing_until - time.monotonic()))
