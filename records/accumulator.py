"""One call's event stream folded into one :class:`~records.model.CallRecord` (pure).

The session publishes, in order: ``CallStarted``; per turn ``AgentSpeech`` (the reply as
heard so far) then ``TurnTimings``; a later ``BargeIn`` revises what the caller heard;
``ProviderIssue`` whenever a provider failed; ``CallEnded`` last. Lists are capped so a
pathological hour-long call cannot grow a record without limit.
"""

from __future__ import annotations

from typing import Any

from pipeline.events import (
    AgentSpeech,
    BargeIn,
    CallEnded,
    CallEvent,
    CallStarted,
    ProviderIssue,
    TurnTimings,
)
from records.model import CallRecord, mask_number

MAX_TURNS = 2000
MAX_ITEMS = 500  # agent lines, barge-ins, provider errors, CDR events

_TIMING_FIELDS = (
    "end_of_speech_ms",
    "stt_final_ms",
    "llm_first_token_ms",
    "tts_first_audio_ms",
    "first_audio_sent_ms",
)


class CallAccumulator:
    """Feed it a call's events with :meth:`add`; :attr:`record` is the record so far."""

    def __init__(self, call_id: str, *, server: str, mask: bool, now: float) -> None:
        self._mask = mask
        self._turns: dict[int, dict[str, Any]] = {}
        self.record = CallRecord(call_id=call_id, started_at=now, server=server)

    @property
    def ended(self) -> bool:
        return self.record.end_reason is not None

    def add(self, event: CallEvent) -> None:
        if isinstance(event, CallStarted):
            self._started(event)
        elif isinstance(event, AgentSpeech):
            self._agent(event)
        elif isinstance(event, TurnTimings):
            self._timings(event)
        elif isinstance(event, BargeIn):
            self._barge_in(event)
        elif isinstance(event, ProviderIssue):
            _append(
                self.record.provider_errors,
                {
                    "at_ms": event.at_ms,
                    "provider": event.provider,
                    "category": event.category,
                    "message": event.message,
                    "retried": event.retried,
                },
            )
        elif isinstance(event, CallEnded):
            self._ended(event)

    def attach_cdr(self, recording_url: str | None, events: list[dict[str, Any]]) -> None:
        if recording_url:
            self.record.recording_url = recording_url
        for data in events:
            if data not in self.record.cdr:
                _append(self.record.cdr, data)

    # -- events -----------------------------------------------------------------------------

    def _started(self, event: CallStarted) -> None:
        r = self.record
        if event.started_at:
            r.started_at = event.started_at
        r.virtual_number = self._number(event.virtual_number)
        r.customer_number = self._number(event.customer_number)
        r.call_type = event.call_type
        r.sample_rate = event.sample_rate
        r.language = event.language
        r.providers = dict(event.providers)

    def _agent(self, event: AgentSpeech) -> None:
        if event.turn == 0:
            if event.greeting and self.record.greeting_ms is None:
                self.record.greeting_ms = event.first_audio_ms
            _append(
                self.record.agent_lines,
                {
                    "at_ms": event.at_ms,
                    "text": event.text,
                    "heard_text": event.heard,
                    "greeting": event.greeting,
                },
            )
            return
        turn = self._turn(event.turn)
        if turn is not None:
            turn["agent_text"] = event.text
            turn["heard_text"] = event.heard

    def _timings(self, event: TurnTimings) -> None:
        turn = self._turn(event.turn)
        if turn is None:
            return
        turn["caller_text"] = event.user_text
        turn["outcome"] = event.outcome
        turn["at_ms"] = event.at_ms
        turn["timings"] = {name: getattr(event, name) for name in _TIMING_FIELDS}

    def _barge_in(self, event: BargeIn) -> None:
        item = {
            "turn": event.turn,
            "at_ms": event.at_ms,
            "heard_text": event.heard_text,
            "words": event.words,
        }
        _append(self.record.barge_ins, item)
        turn = self._turn(event.turn) if event.turn > 0 else None
        if turn is not None:
            turn["barge_in"] = {"at_ms": event.at_ms, "words": event.words}
            turn["heard_text"] = event.heard_text

    def _ended(self, event: CallEnded) -> None:
        r = self.record
        r.duration_s = event.duration_s
        r.ended_at = r.started_at + event.duration_s
        r.end_reason = event.reason
        r.end_detail = event.detail
        r.turn_count = event.turns
        r.barge_in_count = event.barge_ins
        r.transferred_to = event.transferred_to
        r.turns = [self._turns[n] for n in sorted(self._turns)]

    # -- helpers ----------------------------------------------------------------------------

    def _turn(self, number: int) -> dict[str, Any] | None:
        turn = self._turns.get(number)
        if turn is None:
            if len(self._turns) >= MAX_TURNS:
                return None
            turn = self._turns[number] = {
                "turn": number,
                "caller_text": "",
                "agent_text": "",
                "heard_text": "",
                "outcome": None,
                "barge_in": None,
                "timings": {},
            }
        return turn

    def _number(self, number: str) -> str:
        return mask_number(number) if self._mask and number else number


def _append(items: list[dict[str, Any]], item: dict[str, Any]) -> None:
    if len(items) < MAX_ITEMS:
        items.append(item)
