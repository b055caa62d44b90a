"""Small asyncio helpers for call-scoped tasks and provider streams."""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from types import TracebackType
from typing import Any, Self

from config.logs import get_logger

log = get_logger("SESSION")


class Closing(abc.ABC):
    """``async with obj:`` closes ``obj`` with :meth:`aclose` at the end of the block."""

    @abc.abstractmethod
    async def aclose(self) -> None: ...

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait for it to finish, without swallowing our own cancellation."""
    if task.done():
        if not task.cancelled() and task.exception() is not None:
            log.error("Task %s failed: %r", task.get_name(), task.exception())
        return
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled() and task.exception() is not None:
        log.error("Task %s failed: %r", task.get_name(), task.exception())


async def aclose(iterator: AsyncIterator[Any]) -> None:
    """Close a provider stream now (its sockets too), not whenever it is collected.

    Provider streams are async generators; a plain iterator has nothing to close.
    """
    if isinstance(iterator, AsyncGenerator):
        await iterator.aclose()
