"""What the running server holds: settings, shared clients, providers, call records."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import httpx

from config.settings import Settings
from pipeline.agent import AgentConfig
from pipeline.call.providers import Providers
from pipeline.call_record import CallRegistry
from pipeline.events import CallEventHub
from server.lifecycle import Lifecycle
from server.providers import Choice, Stage, missing


@dataclass(slots=True)
class AppState:
    settings: Settings
    agent: AgentConfig
    providers: Providers
    http: httpx.AsyncClient
    choices: dict[Stage, Choice] = field(default_factory=dict)  # what runs each stage, why
    registry: CallRegistry = field(default_factory=CallRegistry)
    events: CallEventHub = field(default_factory=CallEventHub)  # playground, records, metrics
    background: set[asyncio.Task[None]] = field(default_factory=set)
    lifecycle: Lifecycle = field(default_factory=Lifecycle)  # live calls, drain, readiness
    greeting_warmed: asyncio.Event = field(default_factory=asyncio.Event)  # /ready waits on it
    # Event-loop lag samples (ms), the last minute: what every call's callbacks wait.
    loop_lag_ms: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=600)
    )

    def missing(self) -> list[str]:
        """What a live call still lacks (settings, or the local extra); empty when ready."""
        return missing(self.choices)

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def aclose(self) -> None:
        await self.lifecycle.aclose()
        for task in list(self.background):
            task.cancel()
        for task in list(self.background):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.providers.aclose()
        await self.http.aclose()
