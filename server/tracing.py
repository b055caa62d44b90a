"""Optional OpenTelemetry traces: one span per call, a child span per turn.

On only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set and the ``otel`` extra is installed
(``pip install 'knowlarity-voice-agent[otel]'``); otherwise nothing here is imported and
calls pay nothing. Spans are built from the call events after the fact, with the times
the events carry, so tracing adds no work to a call's own path beyond a listener call.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from config.logs import get_logger
from config.settings import Settings
from pipeline.events import (
    AgentSpeech,
    BargeIn,
    CallEnded,
    CallEvent,
    CallStarted,
    ProviderIssue,
    TurnTimings,
)

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span

log = get_logger("SERVER")

MAX_OPEN_CALLS = 100_000
_TIMINGS = ("stt_final_ms", "llm_first_token_ms", "tts_first_audio_ms", "first_audio_sent_ms")


class CallTracer:
    """Turns call events into spans on ``provider`` (tests pass an in-memory exporter)."""

    def __init__(self, provider: TracerProvider) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("voice-agent")
        self._calls: dict[str, tuple[Span, float]] = {}  # call id -> (span, start epoch s)

    def listener(self, event: CallEvent) -> None:
        if isinstance(event, CallStarted):
            self._start(event)
            return
        open_call = self._calls.get(event.call_id)
        if open_call is None:
            return
        span, started = open_call
        if isinstance(event, TurnTimings):
            self._turn(span, started, event)
        elif isinstance(event, AgentSpeech) and event.greeting and event.first_audio_ms:
            span.add_event("greeting_first_audio", timestamp=_ns(started, event.first_audio_ms))
        elif isinstance(event, BargeIn):
            span.add_event("barge_in", {"turn": event.turn}, timestamp=_ns(started, event.at_ms))
        elif isinstance(event, ProviderIssue):
            span.add_event(
                "provider_issue",
                {"provider": event.provider, "kind": event.category, "retried": event.retried},
                timestamp=_ns(started, event.at_ms),
            )
        elif isinstance(event, CallEnded):
            self._end(span, started, event)

    def _start(self, event: CallStarted) -> None:
        if len(self._calls) >= MAX_OPEN_CALLS:
            return
        attributes: dict[str, Any] = {
            "call.id": event.call_id,
            "call.type": event.call_type,
            "call.sample_rate": event.sample_rate,
            "call.language": event.language,
        }
        attributes.update({f"provider.{k}": v for k, v in event.providers.items()})
        span = self._tracer.start_span(
            "call", attributes=attributes, start_time=_ns(event.started_at, 0.0)
        )
        self._calls[event.call_id] = (span, event.started_at)

    def _turn(self, parent: Span, started: float, event: TurnTimings) -> None:
        from opentelemetry import trace

        begin = event.end_of_speech_ms if event.end_of_speech_ms is not None else event.stt_final_ms
        if begin is None:
            return
        child = self._tracer.start_span(
            "turn",
            context=trace.set_span_in_context(parent),
            attributes={"turn.number": event.turn, "turn.outcome": event.outcome},
            start_time=_ns(started, begin),
        )
        for name in _TIMINGS:
            value = getattr(event, name)
            if value is not None:
                child.add_event(name.removesuffix("_ms"), timestamp=_ns(started, value))
        child.end(end_time=_ns(started, max(begin, event.at_ms)))

    def _end(self, span: Span, started: float, event: CallEnded) -> None:
        from opentelemetry.trace import Status, StatusCode

        del self._calls[event.call_id]
        span.set_attribute("call.end_reason", event.reason)
        span.set_attribute("call.turns", event.turns)
        span.set_attribute("call.barge_ins", event.barge_ins)
        if event.reason == "error":
            span.set_status(Status(StatusCode.ERROR, event.detail))
        span.end(end_time=_ns(started, event.duration_s * 1000))

    async def aclose(self) -> None:
        """Flush and stop the exporter (off the event loop: it may wait on the network)."""
        await asyncio.to_thread(self._provider.shutdown)


def _ns(epoch_s: float, at_ms: float) -> int:
    return int((epoch_s + at_ms / 1000) * 1_000_000_000)


def build_tracer(settings: Settings) -> CallTracer | None:
    """A tracer exporting OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT, or None when unset."""
    endpoint = settings.telemetry.otlp_endpoint
    if not endpoint:
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed: "
            "pip install 'knowlarity-voice-agent[otel]'; no traces"
        )
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": "voice-agent"}))
    exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    log.info("Traces go to %s (one span per call, one per turn)", endpoint)
    return CallTracer(provider)
