"""Optional OpenTelemetry traces: a span per call, a child per turn; nothing when off."""

from __future__ import annotations

import asyncio

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from pipeline.events import (
    AgentSpeech,
    BargeIn,
    CallEnded,
    CallEvent,
    CallStarted,
    ProviderIssue,
    TurnTimings,
)
from server.tracing import CallTracer, build_tracer
from tests.conftest import make_settings

T0 = 1_790_000_000.0


def test_a_call_becomes_one_span_with_a_child_per_turn() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = CallTracer(provider)
    events: list[CallEvent] = [
        CallStarted(
            call_id="t1",
            sample_rate=8000,
            language="en",
            providers={"llm": "openai"},
            started_at=T0,
        ),
        AgentSpeech(
            call_id="t1", turn=0, text="Hi", heard="Hi", first_audio_ms=90.0, greeting=True
        ),
        TurnTimings(
            call_id="t1",
            turn=1,
            user_text="hello",
            stt_final_ms=2000,
            llm_first_token_ms=2300,
            tts_first_audio_ms=2450,
            first_audio_sent_ms=2500,
            at_ms=4000,
        ),
        ProviderIssue(
            call_id="t1", provider="cartesia", message="x", retried=True, category="timeout"
        ),
        BargeIn(call_id="t1", turn=1, heard_text="", words="stop", at_ms=3000),
        TurnTimings(call_id="t1", turn=2, user_text="stop", stt_final_ms=3100, at_ms=3200),
        CallEnded(
            call_id="t1",
            reason="error",
            detail="3 failed turns",
            duration_s=6.0,
            turns=2,
            barge_ins=1,
        ),
    ]
    for event in events:
        tracer.listener(event)
    spans = {
        s.name + str((s.attributes or {}).get("turn.number", "")): s
        for s in exporter.get_finished_spans()
    }
    call, first, second = spans["call"], spans["turn1"], spans["turn2"]
    assert call.attributes is not None and call.attributes["call.id"] == "t1"
    assert call.attributes["provider.llm"] == "openai"
    assert call.attributes["call.end_reason"] == "error"
    assert call.status.status_code is StatusCode.ERROR
    assert call.start_time == int(T0 * 1e9) and call.end_time == int((T0 + 6.0) * 1e9)
    assert [e.name for e in call.events] == ["greeting_first_audio", "provider_issue", "barge_in"]
    for turn in (first, second):
        assert turn.parent is not None and turn.parent.span_id == call.context.span_id
        assert turn.context.trace_id == call.context.trace_id
    assert first.start_time == int((T0 + 2.0) * 1e9)
    assert first.end_time == int((T0 + 4.0) * 1e9)
    assert [e.name for e in first.events] == [
        "stt_final",
        "llm_first_token",
        "tts_first_audio",
        "first_audio_sent",
    ]


def test_traces_are_off_without_an_endpoint() -> None:
    assert build_tracer(make_settings({})) is None
    tracer = build_tracer(make_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}))
    assert tracer is not None
    asyncio.run(tracer.aclose())  # flush and stop the exporter's thread
