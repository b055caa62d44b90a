"""A change notifier so tests wait for a condition instead of sleeping blindly."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Changes:
    """Wakes every waiter whenever :meth:`notify` is called; waiters re-check a predicate."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait_for(self, probe: Callable[[], T | None], timeout: float) -> T:
        """Return ``probe()`` once it is not None; ``TimeoutError`` after ``timeout`` s."""
        async with asyncio.timeout(timeout):
            while True:
                event = self._event
                value = probe()
                if value is not None:
                    return value
                await event.wait()
