"""In-memory providers for unit tests of the call core: no sockets, no vendor, no clock.

They implement the interfaces of :mod:`pipeline.providers.base` exactly, so a
:class:`~pipeline.call.session.CallSession` (or one reply, :mod:`pipeline.call.reply`) can
be built from them alone and driven event by event::

    stt = ScriptedSTT()                         # the test says what the caller said
    llm = ScriptedLLM(["We open at nine.", ProviderError(...), ("We op", failure)])
    tts = ToneTTS(ms_per_line=50)              # 50 ms of silence per line, lines recorded
    await stt.say("What time do you open?")    # a final with speech_final=True

- :class:`ScriptedSTT` yields the events the test pushes (``push``, ``say``, ``interim``,
  ``speech_started``, ``utterance_end``); ``end()`` ends the stream as a dead recogniser
  would.
- :class:`ScriptedLLM` answers each request with the next scripted outcome: a text, a
  :class:`ProviderError` raised before any token, a ``(text, error)`` pair (some text,
  then the failure), or a :class:`ToolCall`.
- :class:`ToneTTS` returns ``ms_per_line`` (plus ``ms_per_char`` per character) of
  silent PCM per line, optionally after a delay on the event loop's clock, and records
  every text it was asked to say.
- :class:`MemoryLine` is a :class:`~pipeline.line.LinePort`: it records what the session
  played and sent (``actions``), and the test speaks (``caller``) or hangs up
  (``caller_hangs_up``) for the caller.

They use only ``asyncio`` primitives, so they run on virtual time too
(:mod:`testkit.virtual_time`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from pipeline.providers.base import (
    LLMEvent,
    Message,
    ProviderError,
    STTEvent,
    STTEventKind,
    TextDelta,
    ToolCall,
    ToolSpec,
)

__all__ = ["LineAction", "MemoryLine", "Outcome", "ScriptedLLM", "ScriptedSTT", "ToneTTS"]

Outcome = str | ProviderError | tuple[str, ProviderError] | ToolCall


class ScriptedSTT:
    """A speech recogniser whose events the test pushes; one stream at a time."""

    name = "memory"

    def __init__(self) -> None:
        self.queue: asyncio.Queue[STTEvent | None] = asyncio.Queue()
        self.audio_bytes = 0
        self.streams = 0

    @contextlib.asynccontextmanager
    async def stream(self, sample_rate: int) -> AsyncIterator[ScriptedSTT]:
        self.streams += 1
        try:
            yield self
        finally:
            self.queue.put_nowait(None)

    async def aclose(self) -> None:
        return None

    def send_audio(self, pcm: bytes) -> None:
        self.audio_bytes += len(pcm)

    async def events(self) -> AsyncIterator[STTEvent]:
        while (event := await self.queue.get()) is not None:
            yield event

    # -- what the test says --------------------------------------------------------------

    def push(self, event: STTEvent) -> None:
        self.queue.put_nowait(event)

    def speech_started(self) -> None:
        self.push(STTEvent(STTEventKind.SPEECH_STARTED))

    def interim(self, text: str) -> None:
        self.push(STTEvent(STTEventKind.INTERIM, text))

    def utterance_end(self) -> None:
        self.push(STTEvent(STTEventKind.UTTERANCE_END))

    def say(self, text: str) -> None:
        """A whole utterance: one final transcript that ends the caller's turn."""
        self.push(STTEvent(STTEventKind.FINAL, text, speech_final=True))

    def end(self) -> None:
        """The recogniser stops for good (its stream ends while the call goes on)."""
        self.queue.put_nowait(None)


class ScriptedLLM:
    """Each request gets the next scripted outcome (an empty script is a test bug)."""

    def __init__(self, script: Sequence[Outcome] = (), name: str = "memory") -> None:
        self.name = name
        self.script: deque[Outcome] = deque(script)
        self.requests: list[list[Message]] = []

    @property
    def calls(self) -> int:
        return len(self.requests)

    async def aclose(self) -> None:
        return None

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> AsyncIterator[LLMEvent]:
        self.requests.append(list(messages))
        outcome = self.script.popleft()
        if isinstance(outcome, ProviderError):
            raise outcome
        if isinstance(outcome, ToolCall):
            yield outcome
            return
        text, failure = outcome if isinstance(outcome, tuple) else (outcome, None)
        yield TextDelta(text)
        if failure is not None:
            raise failure


class ToneTTS:
    """Silent PCM for every line: ``ms_per_line`` of it, after ``delay_s`` (event-loop time)."""

    name = "memory"

    def __init__(
        self, ms_per_line: float = 50.0, delay_s: float = 0.0, ms_per_char: float = 0.0
    ) -> None:
        self.ms_per_line = ms_per_line
        self.ms_per_char = ms_per_char
        self.delay_s = delay_s
        self.texts: list[str] = []

    async def aclose(self) -> None:
        return None

    def cache_key(self, text: str, sample_rate: int) -> tuple[str, ...]:
        return (self.name, f"{self.ms_per_line}+{self.ms_per_char}", str(sample_rate), text)

    async def synthesize(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        self.texts.append(text)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        ms = self.ms_per_line + self.ms_per_char * len(text)
        yield bytes(int(sample_rate * ms / 1000) * 2)

    def duration_ms(self, text: str) -> float:
        return self.ms_per_line + self.ms_per_char * len(text)


@dataclass(frozen=True, slots=True)
class LineAction:
    """One thing the session did to the line: ``play`` (with ``pcm_bytes``), ``clear``,
    ``transfer`` (with ``number``) or ``hang_up``; ``at`` on the line's clock."""

    kind: str
    at: float
    pcm_bytes: int = 0
    number: str = ""


class MemoryLine:
    """A line port in memory: what the session sends is recorded, the caller is scripted."""

    def __init__(
        self,
        sample_rate: int = 16000,
        chunk_ms: int = 100,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sample_rate = sample_rate
        self.chunk_ms = chunk_ms
        self._clock = clock
        self.actions: list[LineAction] = []
        self._caller: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.hung_up = False

    def audio(self) -> AsyncIterator[bytes]:
        return self._audio()

    async def _audio(self) -> AsyncIterator[bytes]:
        while (pcm := await self._caller.get()) is not None:
            yield pcm
        self.hung_up = True

    async def play(self, pcm: bytes) -> None:
        if not self.hung_up:
            self.actions.append(LineAction("play", self._clock(), pcm_bytes=len(pcm)))

    async def clear(self) -> None:
        if not self.hung_up:
            self.actions.append(LineAction("clear", self._clock()))

    async def transfer(self, number: str) -> None:
        if not self.hung_up:
            self.actions.append(LineAction("transfer", self._clock(), number=number))

    async def hang_up(self) -> None:
        if not self.hung_up:
            self.actions.append(LineAction("hang_up", self._clock()))

    # -- the caller's side ----------------------------------------------------------------

    def caller(self, pcm: bytes) -> None:
        self._caller.put_nowait(pcm)

    def caller_hangs_up(self) -> None:
        self._caller.put_nowait(None)

    def kinds(self) -> list[str]:
        """The actions in order, with runs of ``play`` folded into one."""
        out: list[str] = []
        for action in self.actions:
            if not (action.kind == "play" and out and out[-1] == "play"):
                out.append(action.kind)
        return out

    def played_ms(self, since: float = float("-inf")) -> float:
        played = sum(a.pcm_bytes for a in self.actions if a.kind == "play" and a.at >= since)
        return played * 1000 / (self.sample_rate * 2)
