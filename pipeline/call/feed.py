"""What a call tells its listeners: one method per :mod:`pipeline.events` event.

The call's parts (listening, reply, ending) publish through one :class:`CallFeed`, which
stamps every event with the call id and ``at_ms`` on the call's own clock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pipeline.call.turn import Turn
from pipeline.call_record import CallRecord
from pipeline.events import (
    AgentSpeech,
    BargeIn,
    CallEnded,
    CallerSpeech,
    CallEvents,
    CallStarted,
    EndReason,
    ProviderIssue,
    TurnTimings,
)
from pipeline.providers.base import ProviderError, STTEvent, STTEventKind, error_category

Outcome = Literal["answered", "interrupted", "failed", "unheard"]


class CallFeed:
    def __init__(
        self, events: CallEvents, record: CallRecord, clock: Callable[[], float], started: float
    ) -> None:
        self._events = events
        self._record = record
        self._clock = clock
        self.started = started

    @property
    def call_id(self) -> str:
        return self._record.call_id

    def at_ms(self, at: float | None = None) -> float:
        return round(((self._clock() if at is None else at) - self.started) * 1000, 1)

    def _rel(self, at: float | None) -> float | None:
        return None if at is None else self.at_ms(at)

    def call_started(self, *, sample_rate: int, language: str, providers: dict[str, str]) -> None:
        record = self._record
        self._events.publish(
            CallStarted(
                call_id=record.call_id,
                sample_rate=sample_rate,
                language=language,
                call_type=record.call_type,
                virtual_number=record.virtual_number,
                customer_number=record.customer_number,
                providers=providers,
                started_at=record.started_at,
            )
        )

    def caller_speech(self, event: STTEvent) -> None:
        phase: Literal["started", "interim", "final"]
        if event.kind is STTEventKind.SPEECH_STARTED:
            phase = "started"
        elif event.kind is STTEventKind.INTERIM and event.text:
            phase = "interim"
        elif event.kind is STTEventKind.FINAL and event.text:
            phase = "final"
        else:
            return
        self._events.publish(
            CallerSpeech(call_id=self.call_id, phase=phase, text=event.text, at_ms=self.at_ms())
        )

    def turn_timings(self, turn: Turn, outcome: Outcome) -> None:
        self._events.publish(
            TurnTimings(
                call_id=self.call_id,
                turn=turn.number,
                user_text=turn.user_text or "",
                end_of_speech_ms=self._rel(turn.end_of_speech_at),
                stt_final_ms=self._rel(turn.started),
                llm_first_token_ms=self._rel(turn.llm_first_token_at),
                tts_first_audio_ms=self._rel(turn.tts_first_audio_at),
                first_audio_sent_ms=self._rel(turn.first_audio_at),
                outcome=outcome,
                at_ms=self.at_ms(),
            )
        )

    def agent_speech(self, turn: Turn, heard: str, *, greeting: bool = False) -> None:
        self._events.publish(
            AgentSpeech(
                call_id=self.call_id,
                turn=turn.number,
                text=turn.reply_text(),
                heard=heard,
                at_ms=self.at_ms(),
                first_audio_ms=self._rel(turn.first_audio_at),
                greeting=greeting,
            )
        )

    def barge_in(self, turn: int, heard: str, words: str, at: float) -> None:
        self._events.publish(
            BargeIn(
                call_id=self.call_id, turn=turn, heard_text=heard, words=words, at_ms=self.at_ms(at)
            )
        )

    def provider_issue(self, exc: ProviderError, *, retried: bool) -> None:
        self._events.publish(
            ProviderIssue(
                call_id=self.call_id,
                provider=exc.provider,
                message=exc.message,
                retried=retried,
                at_ms=self.at_ms(),
                category=error_category(exc),
            )
        )

    def stream_reconnected(self, provider: str) -> None:
        """The STT stream dropped and was re-established within the call."""
        self._events.publish(
            ProviderIssue(
                call_id=self.call_id,
                provider=provider,
                message="stream dropped and re-established",
                retried=True,
                at_ms=self.at_ms(),
                category="reconnect",
            )
        )

    def call_ended(self, reason: EndReason, detail: str) -> None:
        now = self._clock()
        record = self._record
        self._events.publish(
            CallEnded(
                call_id=record.call_id,
                reason=reason,
                detail=detail,
                duration_s=round(now - self.started, 3),
                turns=record.turns,
                barge_ins=record.barge_ins,
                transferred_to=record.transferred_to,
                at_ms=self.at_ms(now),
            )
        )
