"""The one state of a call, the moves it may make, and how the call ended.

::

    ACTIVE ──────────────┬──▶ HANDING_OFF ──▶ TRANSFERRED ─┐
      │  (turns and      │        │                        │
      │   barge-in)      └──▶ ENDING ──┬──▶ TRANSFERRED    ├──▶ HUNG_UP
      │                        ▲       └──▶ DISCONNECTED ──┘
      │                        └── (from HANDING_OFF too)
      └──────────────────────────────────────────────────────▶ HUNG_UP

Only ACTIVE takes turns and lets the caller barge in. HANDING_OFF plays the hand-off line
then transfers; ENDING plays the goodbye (or "unavailable") line then disconnects, or
transfers when it hands the caller on. TRANSFERRED and DISCONNECTED wait for the Stream
Node to close; HUNG_UP (the caller's audio ended) is final and reachable from anywhere.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from config.logs import get_logger
from pipeline.events import EndReason

log = get_logger("SESSION")


class CallState(enum.Enum):
    ACTIVE = "active"
    HANDING_OFF = "handing_off"
    ENDING = "ending"
    TRANSFERRED = "transferred"
    DISCONNECTED = "disconnected"
    HUNG_UP = "hung_up"


ALLOWED: dict[CallState, frozenset[CallState]] = {
    CallState.ACTIVE: frozenset(
        {CallState.HANDING_OFF, CallState.ENDING, CallState.HUNG_UP},
    ),
    CallState.HANDING_OFF: frozenset(
        {CallState.TRANSFERRED, CallState.ENDING, CallState.HUNG_UP},
    ),
    CallState.ENDING: frozenset(
        {CallState.TRANSFERRED, CallState.DISCONNECTED, CallState.HUNG_UP},
    ),
    CallState.TRANSFERRED: frozenset({CallState.HUNG_UP}),
    CallState.DISCONNECTED: frozenset({CallState.HUNG_UP}),
    CallState.HUNG_UP: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A move the state diagram does not allow: a bug in the caller of ``to``."""


@dataclass(slots=True)
class CallStatus:
    """The call's state, plus why it is ending (for the log and ``CallEnded``)."""

    state: CallState = CallState.ACTIVE
    end_reason: EndReason = "caller_hangup"
    detail: str | None = None  # e.g. "no speech for 30 s"; None while nobody ended the call

    @property
    def takes_turns(self) -> bool:
        """Whether caller speech may start a reply or cut the bot off."""
        return self.state is CallState.ACTIVE

    @property
    def agent_ending(self) -> bool:
        """The agent is winding the call down (a line is playing before the hand-back)."""
        return self.state in (CallState.HANDING_OFF, CallState.ENDING)

    @property
    def handed_back(self) -> bool:
        """The line was transferred or disconnected, or the caller hung up."""
        return self.state in (CallState.TRANSFERRED, CallState.DISCONNECTED, CallState.HUNG_UP)

    def can(self, new: CallState) -> bool:
        return new in ALLOWED[self.state]

    def to(
        self, new: CallState, *, reason: EndReason | None = None, detail: str | None = None
    ) -> None:
        """Move to ``new``; ``reason``/``detail`` say why the agent ends the call."""
        if not self.can(new):
            raise IllegalTransition(f"{self.state.value} -> {new.value}")
        log.debug("Call state %s -> %s", self.state.value, new.value)
        self.state = new
        if new is CallState.TRANSFERRED:
            self.end_reason = "transfer"
        elif reason is not None:
            self.end_reason = reason
        if detail is not None:
            self.detail = detail
