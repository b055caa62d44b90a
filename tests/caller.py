"""The shared set-up of calls through the Stream Node simulator (e2e and fault tests)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from audio.wav import read_wav_file
from streamnode.caller_line import CallerLine
from streamnode.client import StreamNodeClient

__all__ = [
    "FIXTURES",
    "CallerLine",
    "eventually",
    "fixture_pcm",
    "live_call",
    "session_tasks",
    "wait_until_quiet",
]

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def fixture_pcm(name: str) -> bytes:
    """The PCM of a speech fixture (16-bit mono WAV in ``fixtures/``)."""
    return read_wav_file(FIXTURES / name).pcm


async def eventually(probe: Callable[[], object], timeout: float = 5.0) -> None:  # noqa: ASYNC109
    """Poll ``probe`` until it holds (for state that has no event to wait on)."""
    async with asyncio.timeout(timeout):
        while not probe():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def live_call(
    url: str, call_id: str, sample_rate: int = 16000
) -> AsyncIterator[tuple[StreamNodeClient, CallerLine]]:
    """A connected call, past its greeting, with the caller line streaming silence."""
    async with StreamNodeClient(sample_rate=sample_rate) as node:
        await node.connect(url)
        await node.send_metadata({"callid": call_id})
        async with CallerLine(node, sample_rate) as line:
            await node.wait_for("playAudio", timeout=5)
            await wait_until_quiet(node)
            yield node, line


QUIET_SETTLE_S = 0.5


async def wait_until_quiet(node: StreamNodeClient, timeout: float = 15.0) -> None:  # noqa: ASYNC109
    """Wait until everything the bot sent has played at the (simulated) Stream Node."""
    async with asyncio.timeout(timeout):
        while True:
            # The playback clock is a computed deadline, not an event: sleep until it passes.
            while node.is_playing:  # noqa: ASYNC110
                await asyncio.sleep(max(0.02, node.playing_until - time.monotonic()))
            # Just-in-time playout sends a reply only a lead ahead of the ear, so on a loaded
            # box the queue can run dry for a moment mid-reply: quiet means nothing new comes.
            seen = len(node.events)
            await asyncio.sleep(QUIET_SETTLE_S)
            if not node.is_playing and len(node.events) == seen:
                return


SESSION_TASKS = {
    "turn",
    "listen",
    "stt-events",
    "playout",
    "watchdog",
    "goodbye",
    "think",
    "voice",
    "tts-feed",
    "deepgram-stream",
    "deepgram-send",
    "deepgram-recv",
    "deepgram-stall-watch",
    "stt-finals",
    "stt-interim",
    "stt-guess",
}


def session_tasks() -> set[str]:
    """Names of the call-scoped tasks still alive (none once every call has ended)."""
    return {t.get_name() for t in asyncio.all_tasks() if t.get_name() in SESSION_TASKS}
