"""A change notifier so tests wait for a condition instead of sleeping blindly."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Changes:
    """Wakes every waiter whenever :meth:`notify` is called; waiters re-check a probe.

    ``notify`` costs nothing while nobody waits, so the fakes call it on every event.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._waiters = 0

    def notify(self) -> None:
        if self._waiters:
            event, self._event = self._event, asyncio.Event()
            event.set()

    async def wait_for(self, probe: Callable[[], T | None], timeout_s: float) -> T:
        """Return ``probe()`` once it is not None; ``TimeoutError`` after ``timeout_s``."""
        async with asyncio.timeout(timeout_s):
            while True:
                event = self._event
                value = probe()
                if value is not None:
                    return value
                self._waiters += 1
                try:
                    await event.wait()
                finally:
                    self._waiters -= 1
