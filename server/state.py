"""What the running server holds: settings, shared clients, providers, call records."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import httpx

from config.settings import Settings
from pipeline.agent import AgentConfig
from pipeline.session import Providers
from server.lifecycle import Lifecycle
from server.registry import CallRegistry


@dataclass(slots=True)
class AppState:
    settings: Settings
    agent: AgentConfig
    providers: Providers
    http: httpx.AsyncClient
    registry: CallRegistry = field(default_factory=CallRegistry)
    background: set[asyncio.Task[None]] = field(default_factory=set)
    lifecycle: Lifecycle = field(default_factory=Lifecycle)  # live calls, drain, readiness

    def spawn(self, coro: object, name: str) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)  # type: ignore[arg-type]
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def aclose(self) -> None:
        await self.lifecycle.aclose()
        for task in list(self.background):
            task.cancel()
        for task in list(self.background):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        llm_close = getattr(self.providers.llm, "aclose", None)
        if llm_close is not None:
            await llm_close()
        await self.http.aclose()
