"""What the running server holds: settings, shared clients, providers, call records."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import httpx

from audio.vad import SileroVadModel
from config.settings import Settings
from pipeline.agent import AgentConfig
from pipeline.call.providers import Providers
from pipeline.call_record import CallRegistry
from pipeline.events import CallEventHub
from pipeline.language import CallLanguage, FixedLines, choose_language
from pipeline.turntaking.config import TurnTakingConfig
from server.lifecycle import Lifecycle
from server.limits import IpLimits, LogThrottle, PendingPool
from server.providers import Choice, Stage, missing


@dataclass(frozen=True, slots=True)
class CallSetup:
    """What a call in one language is made of (``/voice?lang=hi``)."""

    language: CallLanguage
    agent: AgentConfig
    providers: Providers


@dataclass(slots=True)
class AppState:
    settings: Settings
    agent: AgentConfig  # the default language's
    providers: Providers  # the default language's (closed with the app)
    http: httpx.AsyncClient
    choices: dict[Stage, Choice] = field(default_factory=dict)  # what runs each stage, why
    registry: CallRegistry = field(default_factory=CallRegistry)
    events: CallEventHub = field(default_factory=CallEventHub)  # playground, records, metrics
    background: set[asyncio.Task[None]] = field(default_factory=set)
    lifecycle: Lifecycle = field(default_factory=Lifecycle)  # live calls, drain, readiness
    greeting_warmed: asyncio.Event = field(default_factory=asyncio.Event)  # /ready waits on it
    connections_warmed: asyncio.Event = field(default_factory=asyncio.Event)  # ... and on it
    ip_limits: IpLimits = field(default_factory=IpLimits)  # per-address handshake limits
    refusal_log: LogThrottle = field(default_factory=LogThrottle)  # refused-handshake lines
    # Accepted streams with no frame yet; the app sizes it at MAX_CALLS / 4 (at least 16).
    pending_pool: PendingPool = field(default_factory=lambda: PendingPool(50))
    # Event-loop lag samples (ms), the last minute: what every call's callbacks wait.
    loop_lag_ms: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=600)
    )

    setups: dict[str, CallSetup] = field(default_factory=dict)  # by language code
    turn_taking: TurnTakingConfig = field(default_factory=TurnTakingConfig)
    vad: SileroVadModel | None = None  # the local VAD for barge-in (LOCAL_VAD), if any

    def setup_for(self, lang: str | None) -> CallSetup:
        """The call's language (``?lang=``), else the default; one setup if none are set."""
        if not self.setups:
            default = CallLanguage("en", "", "", None, _lines(self.agent))
            return CallSetup(default, self.agent, self.providers)
        languages = {code: setup.language for code, setup in self.setups.items()}
        chosen = choose_language(lang, languages, self.settings.hindi.default_language)
        return self.setups[chosen.code]

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
        for setup in self.setups.values():  # other languages' own STT/TTS (shared: skipped)
            for own in (setup.providers.stt, setup.providers.tts):
                if own is not None and own not in (self.providers.stt, self.providers.tts):
                    await own.aclose()
        await self.http.aclose()


def _lines(agent: AgentConfig) -> FixedLines:
    return FixedLines(
        agent.greeting,
        agent.system_prompt,
        agent.fallback_line,
        agent.goodbye_line,
        agent.transfer_line,
        agent.unavailable_line,
    )
