"""What happened on a call, as plain events: the one feed for the playground, records and metrics.

The call core publishes these through a :class:`CallEvents` sink it is given; it never
knows who listens. Listeners (the browser playground's per-call feed, the call records
store, Prometheus metrics) subscribe to a :class:`CallEventHub` owned by the app.

Times are ``at_ms``: milliseconds since the call started, on the call's monotonic clock,
so a page can draw a waterfall without knowing any server clock. Publishing never
blocks and never raises: a slow subscriber loses its oldest events, not the call's time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

EndReason = Literal["caller_hangup", "transfer", "agent_disconnect", "timeout", "error"]


@dataclass(frozen=True, slots=True)
class CallStarted:
    call_id: str
    sample_rate: int
    language: str
    call_type: str = ""
    virtual_number: str = ""  # masked by the publisher per its settings
    customer_number: str = ""
    providers: dict[str, str] = field(default_factory=dict)  # stage -> provider name
    started_at: float = 0.0  # wall clock, seconds since the epoch
    at_ms: float = 0.0
    kind: Literal["call_started"] = "call_started"


@dataclass(frozen=True, slots=True)
class CallerSpeech:
    """Caller speech onset (``started``) or a transcript (``interim`` / ``final``)."""

    call_id: str
    phase: Literal["started", "interim", "final"]
    text: str = ""
    at_ms: float = 0.0
    kind: Literal["caller_speech"] = "caller_speech"


@dataclass(frozen=True, slots=True)
class AgentSpeech:
    """A line the agent spoke (``heard`` is the part the caller heard, after barge-in)."""

    call_id: str
    turn: int  # 0 for fixed lines (greeting, goodbye, hand-off)
    text: str
    heard: str
    at_ms: float = 0.0
    kind: Literal["agent_speech"] = "agent_speech"
    first_audio_ms: float | None = None  # when its first audio went out
    greeting: bool = False  # the greeting (its first_audio_ms is the greeting latency)


@dataclass(frozen=True, slots=True)
class TurnTimings:
    """One turn's milestones, in ms since the call started (None: did not happen)."""

    call_id: str
    turn: int
    user_text: str
    end_of_speech_ms: float | None = None  # caller stopped talking (VAD/STT), if known
    stt_final_ms: float | None = None  # the turn's final transcript arrived
    llm_first_token_ms: float | None = None
    tts_first_audio_ms: float | None = None
    first_audio_sent_ms: float | None = None  # first playAudio (or line equivalent) out
    outcome: Literal["answered", "interrupted", "failed", "unheard"] = "answered"
    at_ms: float = 0.0
    kind: Literal["turn_timings"] = "turn_timings"


@dataclass(frozen=True, slots=True)
class BargeIn:
    call_id: str
    turn: int
    heard_text: str  # what the caller heard of the reply before it was cut
    words: str  # what the caller said over it
    at_ms: float = 0.0
    kind: Literal["barge_in"] = "barge_in"


@dataclass(frozen=True, slots=True)
class ProviderIssue:
    call_id: str
    provider: str
    message: str
    retried: bool
    at_ms: float = 0.0
    kind: Literal["provider_issue"] = "provider_issue"
    # timeout, rate_limited, server_error, client_error, connection, not_configured,
    # reconnect (a dropped stream re-established), error: low-cardinality, for metrics.
    category: str = "error"


@dataclass(frozen=True, slots=True)
class CallEnded:
    call_id: str
    reason: EndReason
    detail: str
    duration_s: float
    turns: int
    barge_ins: int
    transferred_to: str | None = None
    at_ms: float = 0.0
    kind: Literal["call_ended"] = "call_ended"


CallEvent = (
    CallStarted | CallerSpeech | AgentSpeech | TurnTimings | BargeIn | ProviderIssue | CallEnded
)


def event_to_dict(event: CallEvent) -> dict[str, Any]:
    """JSON-ready form (``kind`` names the event)."""
    return asdict(event)


class CallEvents(Protocol):
    """What the call core publishes into. Must not block or raise."""

    def publish(self, event: CallEvent) -> None: ...


class NullEvents:
    """A sink that drops everything (tests, tools)."""

    def publish(self, event: CallEvent) -> None:
        return None


class _Subscription:
    def __init__(self, maxlen: int) -> None:
        self.events: deque[CallEvent] = deque(maxlen=maxlen)  # oldest dropped when full
        self.wake = asyncio.Event()


class CallEventHub:
    """Fans call events out to subscribers; keeps a short replay per recent call.

    ``subscribe(call_id)`` yields the call's events so far, then live ones, and ends
    after ``CallEnded``. ``subscribe(None)`` follows every call (records, metrics).
    Listeners registered with :meth:`add_listener` are called synchronously and must be
    cheap (a counter increment, a bounded ``put_nowait``).
    """

    def __init__(self, *, replay: int = 500, keep_calls: int = 200, queue: int = 1000) -> None:
        self._replay_len = replay
        self._keep_calls = keep_calls
        self._queue_len = queue
        self._replays: OrderedDict[str, deque[CallEvent]] = OrderedDict()
        self._subs: dict[str | None, set[_Subscription]] = {}
        self._listeners: list[Callable[[CallEvent], None]] = []

    def add_listener(self, listener: Callable[[CallEvent], None]) -> None:
        self._listeners.append(listener)

    def publish(self, event: CallEvent) -> None:
        replay = self._replays.get(event.call_id)
        if replay is None:
            replay = self._replays[event.call_id] = deque(maxlen=self._replay_len)
            while len(self._replays) > self._keep_calls:
                self._replays.popitem(last=False)
        replay.append(event)
        for listener in self._listeners:
            with contextlib.suppress(Exception):  # a listener bug must not end the call
                listener(event)
        for key in (event.call_id, None):
            for sub in self._subs.get(key, ()):
                sub.events.append(event)
                sub.wake.set()

    def known(self, call_id: str) -> bool:
        return call_id in self._replays

    def call_ids(self) -> list[str]:
        """The calls with a replay, oldest first."""
        return list(self._replays)

    def history(self, call_id: str) -> list[CallEvent]:
        return list(self._replays.get(call_id, ()))

    async def subscribe(self, call_id: str | None) -> AsyncGenerator[CallEvent, None]:
        sub = _Subscription(self._queue_len)
        if call_id is not None:
            sub.events.extend(self._replays.get(call_id, ()))
        self._subs.setdefault(call_id, set()).add(sub)
        try:
            while True:
                while sub.events:
                    event = sub.events.popleft()
                    yield event
                    if call_id is not None and isinstance(event, CallEnded):
                        return
                sub.wake.clear()
                await sub.wake.wait()
        finally:
            subs = self._subs.get(call_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[call_id]
