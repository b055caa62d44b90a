"""The playground's history read from the call records store, this process's memory beside it.

The records database (``records/``) keeps every call of every process; the event hub only
the last ones of this process. So the history reads the store first, and uses memory for
what the store cannot have yet: the writer stores a call when it starts and again when it
ends, in batches, so a call still running (or ended a moment ago) is fresher in memory.
When the database does not answer, the page still gets this process's calls from memory.

A record keeps the turns, not the raw events; :func:`record_events` turns it back into the
events the page draws (the same shapes as ``pipeline/events.py``), so one page renders both.
"""

from __future__ import annotations

from typing import Any

from config.logs import get_logger
from records.model import CallRecord
from records.store import CallQuery, RecordStore
from server.call_history import CallDetail, CallHistory, CallSummary

__all__ = ["RecordsHistory", "record_events", "record_summary"]

log = get_logger("PLAYGROUND")


def record_summary(record: CallRecord) -> CallSummary:
    return CallSummary(
        call_id=record.call_id,
        started_at=record.started_at,
        duration_s=None if record.duration_s is None else round(record.duration_s, 3),
        turns=record.turn_count,
        barge_ins=record.barge_in_count,
        end_reason=record.end_reason,
        active=record.active,
        sample_rate=record.sample_rate or None,
        source="records",
    )


def record_events(record: CallRecord) -> list[dict[str, Any]]:
    """The events a stored call published, as far as its record tells (oldest first)."""
    call_id = record.call_id
    events: list[tuple[float, int, dict[str, Any]]] = []

    def add(at_ms: float | None, kind: str, **fields: Any) -> None:
        at = float(at_ms or 0.0)
        events.append((at, len(events), {"call_id": call_id, "kind": kind, "at_ms": at, **fields}))

    add(
        0.0,
        "call_started",
        sample_rate=record.sample_rate,
        language=record.language,
        call_type=record.call_type,
        virtual_number=record.virtual_number,
        customer_number=record.customer_number,
        providers=dict(record.providers),
        started_at=record.started_at,
    )
    for line in record.agent_lines:
        add(
            line.get("at_ms"),
            "agent_speech",
            turn=0,
            text=line.get("text", ""),
            heard=line.get("heard_text", ""),
            greeting=bool(line.get("greeting")),
        )
    for turn in record.turns:
        number, timings = turn["turn"], turn.get("timings") or {}
        said_at = timings.get("stt_final_ms") or turn.get("at_ms")
        if turn.get("caller_text"):
            add(said_at, "caller_speech", phase="final", text=turn["caller_text"])
        if turn.get("agent_text"):
            spoke_at = timings.get("first_audio_sent_ms") or turn.get("at_ms")
            heard = turn.get("heard_text", "")  # already cut where a barge-in cut it
            add(spoke_at, "agent_speech", turn=number, text=turn["agent_text"], heard=heard)
        add(
            turn.get("at_ms"),
            "turn_timings",
            turn=number,
            user_text=turn.get("caller_text", ""),
            outcome=turn.get("outcome") or "answered",
            **{name: timings.get(name) for name in _TIMINGS},
        )
    for barge_in in record.barge_ins:
        add(
            barge_in.get("at_ms"),
            "barge_in",
            turn=barge_in.get("turn", 0),
            heard_text=barge_in.get("heard_text", ""),
            words=barge_in.get("words", ""),
        )
    if record.end_reason is not None:
        add(
            (record.duration_s or 0.0) * 1000,
            "call_ended",
            reason=record.end_reason,
            detail=record.end_detail,
            duration_s=record.duration_s,
            turns=record.turn_count,
            barge_ins=record.barge_in_count,
            transferred_to=record.transferred_to,
        )
    return [event for _, _, event in sorted(events, key=lambda item: item[:2])]


_TIMINGS = (
    "end_of_speech_ms",
    "stt_final_ms",
    "llm_first_token_ms",
    "tts_first_audio_ms",
    "first_audio_sent_ms",
)


class RecordsHistory:
    """:class:`~server.call_history.CallHistory` on the records store, with ``memory``
    (this process's hub, or the worker relay) for calls the store has not caught up with."""

    name = "records"

    def __init__(self, store: RecordStore, memory: CallHistory) -> None:
        self._store = store
        self._memory = memory

    async def recent(self, limit: int) -> list[CallSummary]:
        stored = await self._stored(limit)
        if stored is None:
            return await self._memory.recent(limit)
        fresh = {row.call_id: row for row in await self._memory.recent(limit)}
        rows = {record.call_id: record_summary(record) for record in stored}
        for call_id, row in fresh.items():
            kept = rows.get(call_id)
            if kept is None or kept.active:  # not stored yet, or stored before it ended
                rows[call_id] = row
        newest = sorted(rows.values(), key=lambda r: (r.started_at or 0.0, r.call_id))
        return newest[::-1][:limit]

    async def detail(self, call_id: str) -> CallDetail | None:
        try:
            record = await self._store.get(call_id)
        except Exception as exc:  # the database is down: this process's memory still helps
            log.warning("Records store unreadable (%s); history from memory", type(exc).__name__)
            record = None
        if record is not None and not record.active:
            return CallDetail(record_summary(record), record_events(record))
        live = await self._memory.detail(call_id)
        if live is not None or record is None:
            return live
        return CallDetail(record_summary(record), record_events(record))

    async def _stored(self, limit: int) -> list[CallRecord] | None:
        try:
            records, _ = await self._store.list(CallQuery(limit=limit))
        except Exception as exc:  # as above
            log.warning("Records store unreadable (%s); history from memory", type(exc).__name__)
            return None
        return records
