"""Helpers for tests that place calls through the Stream Node simulator."""

from __future__ import annotations

import asyncio
import time

from server.simulator import CallerLine, StreamNodeClient

__all__ = ["CallerLine", "wait_until_quiet"]


async def wait_until_quiet(node: StreamNodeClient, timeout: float = 15.0) -> None:  # noqa: ASYNC109
    """Wait until everything the bot sent has played at the (simulated) Stream Node."""
    async with asyncio.timeout(timeout):
        # The playback clock is a computed deadline, not an event: sleep until it passes.
        while node.is_playing:  # noqa: ASYNC110
            await asyncio.sleep(max(0.02, node.playing_until - time.monotonic()))


SESSION_TASKS = {
    "turn",
    "listen",
    "watchdog",
    "goodbye",
    "think",
    "voice",
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
