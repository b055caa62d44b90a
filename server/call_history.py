"""Recent calls for the playground's history view, behind one small reader interface.

Two readers answer in the same JSON shapes, so the page does not care which one it gets:
the in-memory event hub (:class:`HubHistory`: the last calls of this process, as their
events tell them) and, when call records are on, the records database with the hub beside
it (:class:`server.records_history.RecordsHistory`). Each row says where it came from.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from pipeline.events import (
    BargeIn,
    CallEnded,
    CallEvent,
    CallEventHub,
    CallStarted,
    TurnTimings,
    event_to_dict,
)

__all__ = ["CallDetail", "CallHistory", "CallSummary", "HubHistory", "summarise"]


@dataclass(frozen=True, slots=True)
class CallSummary:
    """One row of the history list."""

    call_id: str
    started_at: float | None  # wall clock, seconds since the epoch
    duration_s: float | None  # so far, while the call runs
    turns: int
    barge_ins: int
    end_reason: str | None  # None while the call runs
    active: bool
    sample_rate: int | None = None
    source: str = "memory"  # "records": read from the records database

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class CallDetail:
    """One call: its summary and every event it published (the page draws both)."""

    summary: CallSummary
    events: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "call": self.summary.to_dict(),
            "events": self.events,
            "source": self.summary.source,
        }


class CallHistory(Protocol):
    """Where the history view reads from (async: a database reader fits the same shape)."""

    name: str

    async def recent(self, limit: int) -> list[CallSummary]: ...

    async def detail(self, call_id: str) -> CallDetail | None: ...


def summarise(
    call_id: str, events: list[CallEvent], now: float | None = None
) -> CallSummary | None:
    """A call's row from its events; None when its start is unknown (evicted replay)."""
    started = next((e for e in events if isinstance(e, CallStarted)), None)
    ended = next((e for e in reversed(events) if isinstance(e, CallEnded)), None)
    if started is None and ended is None:
        return None
    started_at = started.started_at if started is not None and started.started_at else None
    if ended is not None:
        return CallSummary(
            call_id=call_id,
            started_at=started_at,
            duration_s=round(ended.duration_s, 3),
            turns=ended.turns,
            barge_ins=ended.barge_ins,
            end_reason=ended.reason,
            active=False,
            sample_rate=started.sample_rate if started is not None else None,
        )
    assert started is not None
    clock = time.time() if now is None else now
    return CallSummary(
        call_id=call_id,
        started_at=started_at,
        duration_s=round(max(0.0, clock - started_at), 3) if started_at else None,
        turns=len({e.turn for e in events if isinstance(e, TurnTimings)}),
        barge_ins=sum(isinstance(e, BargeIn) for e in events),
        end_reason=None,
        active=True,
        sample_rate=started.sample_rate,
    )


class HubHistory:
    """The calls whose events the hub still keeps (the last few hundred of this process)."""

    name = "memory"

    def __init__(self, hub: CallEventHub) -> None:
        self._hub = hub

    async def recent(self, limit: int) -> list[CallSummary]:
        rows: list[CallSummary] = []
        for call_id in reversed(self._hub.call_ids()):  # newest first
            row = summarise(call_id, self._hub.history(call_id))
            if row is not None:
                rows.append(row)
                if len(rows) >= limit:
                    break
        return rows

    async def detail(self, call_id: str) -> CallDetail | None:
        events = self._hub.history(call_id)
        summary = summarise(call_id, events)
        if summary is None:
            return None
        return CallDetail(summary, [event_to_dict(e) for e in events])
