"""The call's turn-taking inbox: everything listening must react to, in arrival order.

Speech-to-text events, the local VAD's onsets and offsets, and *nudges* (the reply's
state may have changed: its audio started, its turn ended) go into one bounded queue
that the listening task reads; :meth:`Inbox.next` also wakes it at the next turn-taking
deadline (a barge-in window closing, the bot falling silent), on the call's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from config.logs import get_logger
from pipeline.providers.base import STTEvent, STTStream

log = get_logger("SESSION")

NUDGE = "nudge"
Input = STTEvent | bool | str | None  # STT event, VAD onset (True) / offset, nudge, STT ended
INBOX_SIZE = 256  # events arrive at speech rate; the listener drains them in microseconds


class Inbox:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._queue: asyncio.Queue[Input] = asyncio.Queue(maxsize=INBOX_SIZE)
        self._clock = clock

    def voice_activity(self, speech: bool) -> None:
        try:
            self._queue.put_nowait(speech)
        except asyncio.QueueFull:
            log.warning("Turn-taking inbox full; a VAD %s was dropped", speech)

    def nudge(self) -> None:
        with contextlib.suppress(asyncio.QueueFull):  # a full inbox wakes the listener anyway
            self._queue.put_nowait(NUDGE)

    async def read_stt(self, stt: STTStream) -> None:
        """Forward the recogniser's events, then None when its stream ends."""
        async for event in stt.events():
            await self._queue.put(event)
        await self._queue.put(None)

    async def next(self, due: float | None) -> Input:
        """The next input, or a nudge at ``due`` if nothing came before it."""
        if due is None:
            return await self._queue.get()
        try:
            async with asyncio.timeout(max(0.005, due - self._clock())):
                return await self._queue.get()
        except TimeoutError:
            return NUDGE
