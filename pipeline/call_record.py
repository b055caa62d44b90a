"""Records of the calls this server is handling or handled recently.

Other parts (the Knowlarity notification consumer, metrics) look calls up here; the
registry is bounded so a long-running server does not grow without limit.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class CallRecord:
    call_id: str
    virtual_number: str = ""
    customer_number: str = ""
    call_type: str = ""
    sample_rate: int = 16000
    started_at: float = field(default_factory=time.time)  # wall clock, seconds since epoch
    ended_at: float | None = None
    turns: int = 0
    barge_ins: int = 0
    turn_latencies_ms: list[float] = field(default_factory=list)
    transferred_to: str | None = None
    recording_url: str | None = None
    provider_events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.ended_at is None

    def overlaps(self, start: float, end: float | None, slack_s: float = 120.0) -> bool:
        """Whether [start, end] overlaps this call's lifetime, allowing clock skew."""
        mine_end = self.ended_at if self.ended_at is not None else time.time()
        other_end = end if end is not None else start
        return start - slack_s <= mine_end and self.started_at - slack_s <= other_end


class CallRegistry:
    def __init__(self, keep_finished: int = 1000) -> None:
        self._records: OrderedDict[str, CallRecord] = OrderedDict()
        self._keep_finished = keep_finished

    def add(self, record: CallRecord) -> CallRecord:
        # Knowlarity may reuse nothing, but a simulator may: the newest record wins.
        self._records.pop(record.call_id, None)
        self._records[record.call_id] = record
        self._trim()
        return record

    def unique_id(self, call_id: str) -> str:
        """``call_id``, or ``call_id.2``, ``.3``... when a live call already has it.

        A second live call with the same id must never replace the first one's record
        (the registry is keyed by id): it gets its own. A finished call's id may be reused.
        """
        existing = self._records.get(call_id)
        if existing is None or not existing.active:
            return call_id
        n = 2
        while f"{call_id}.{n}" in self._records:
            n += 1
        return f"{call_id}.{n}"

    def get(self, call_id: str) -> CallRecord | None:
        return self._records.get(call_id)

    def finish(self, call_id: str) -> None:
        record = self._records.get(call_id)
        if record is not None and record.ended_at is None:
            record.ended_at = time.time()
        self._trim()

    def active(self) -> list[CallRecord]:
        return [r for r in self._records.values() if r.active]

    def recent(self) -> list[CallRecord]:
        """All records, newest last."""
        return list(self._records.values())

    def _trim(self) -> None:
        finished = [k for k, r in self._records.items() if not r.active]
        for key in finished[: max(0, len(finished) - self._keep_finished)]:
            del self._records[key]
