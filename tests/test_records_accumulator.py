"""A call's events folded into one record (pure), number masking, and time arguments."""

from __future__ import annotations

import pytest

from pipeline.events import (
    AgentSpeech,
    BargeIn,
    CallEnded,
    CallerSpeech,
    CallEvent,
    CallStarted,
    ProviderIssue,
    TurnTimings,
)
from records.accumulator import CallAccumulator
from records.model import mask_number, parse_when


def test_a_call_with_a_reply_a_barge_in_and_a_provider_fault() -> None:
    acc = CallAccumulator("c1", server="host:1", mask=True, now=5.0)
    events: list[CallEvent] = [
        CallStarted(
            call_id="c1",
            sample_rate=8000,
            language="hi",
            call_type="inbound",
            virtual_number="+911140000000",
            customer_number="+919876543210",
            providers={"stt": "deepgram", "llm": "openai", "tts": "cartesia"},
            started_at=1000.0,
        ),
        AgentSpeech(
            call_id="c1",
            turn=0,
            text="Hello!",
            heard="Hello!",
            at_ms=900,
            first_audio_ms=120.0,
            greeting=True,
        ),
        CallerSpeech(call_id="c1", phase="final", text="When do you open?", at_ms=3000),
        ProviderIssue(
            call_id="c1",
            provider="openai",
            message="HTTP 500: boom",
            retried=True,
            at_ms=3300,
            category="server_error",
        ),
        AgentSpeech(call_id="c1", turn=1, text="At nine. Until six.", heard="At nine.", at_ms=5000),
        TurnTimings(
            call_id="c1",
            turn=1,
            user_text="When do you open?",
            stt_final_ms=3010,
            llm_first_token_ms=3500,
            tts_first_audio_ms=3650,
            first_audio_sent_ms=3700,
            outcome="interrupted",
            at_ms=5000,
        ),
        BargeIn(call_id="c1", turn=1, heard_text="At nine", words="wait", at_ms=5001),
        CallEnded(
            call_id="c1",
            reason="caller_hangup",
            detail="caller hung up",
            duration_s=12.5,
            turns=1,
            barge_ins=1,
        ),
    ]
    for event in events:
        acc.add(event)
        assert acc.ended == isinstance(event, CallEnded)
    r = acc.record
    assert (r.call_id, r.server, r.started_at, r.ended_at) == ("c1", "host:1", 1000.0, 1012.5)
    assert (r.virtual_number, r.customer_number) == ("+91******0000", "+91******3210")
    assert (r.call_type, r.sample_rate, r.language) == ("inbound", 8000, "hi")
    assert r.providers["llm"] == "openai"
    assert (r.end_reason, r.turn_count, r.barge_in_count, r.greeting_ms) == (
        "caller_hangup",
        1,
        1,
        120.0,
    )
    (turn,) = r.turns
    assert turn["caller_text"] == "When do you open?"
    assert turn["agent_text"] == "At nine. Until six."
    assert turn["heard_text"] == "At nine"  # revised by the barge-in: what was really heard
    assert turn["outcome"] == "interrupted"
    assert turn["barge_in"] == {"at_ms": 5001, "words": "wait"}
    assert turn["timings"]["llm_first_token_ms"] == 3500
    assert turn["timings"]["end_of_speech_ms"] is None
    assert r.agent_lines == [
        {"at_ms": 900, "text": "Hello!", "heard_text": "Hello!", "greeting": True}
    ]
    assert r.provider_errors == [
        {
            "at_ms": 3300,
            "provider": "openai",
            "category": "server_error",
            "message": "HTTP 500: boom",
            "retried": True,
        }
    ]
    assert r.to_dict()["started"] == "1970-01-01T00:16:40.000+00:00"
    assert "turns" not in r.summary() and r.summary()["provider_error_count"] == 1


def test_numbers_stay_whole_when_masking_is_off_and_cdr_events_are_kept_once() -> None:
    acc = CallAccumulator("c2", server="s", mask=False, now=1.0)
    acc.add(CallStarted(call_id="c2", sample_rate=16000, language="en", customer_number="+9198"))
    acc.attach_cdr("http://rec/1.mp3", [{"uuid": "u"}])
    acc.attach_cdr(None, [{"uuid": "u"}, {"uuid": "v"}])
    assert acc.record.customer_number == "+9198"
    assert acc.record.recording_url == "http://rec/1.mp3"
    assert acc.record.cdr == [{"uuid": "u"}, {"uuid": "v"}]
    assert acc.record.active


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("+919876543210", "+91******3210"),
        ("09876543210", "*******3210"),
        ("+91 98765 43210", "+91 ***** *3210"),
        ("+91******3210", "+91******3210"),  # already masked: unchanged
        ("1234", "1234"),
        ("", ""),
    ],
)
def test_mask_number(number: str, masked: str) -> None:
    assert mask_number(number) == masked


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", 1_000_000.0 - 7 * 86_400),
        ("24h", 1_000_000.0 - 86_400),
        ("30m", 1_000_000.0 - 1800),
        ("1790000000", 1_790_000_000.0),
        ("1970-01-02", 86_400.0),
        ("1970-01-01T05:30:00+05:30", 0.0),
        ("1970-01-01T00:01:00Z", 60.0),
    ],
)
def test_parse_when(text: str, expected: float) -> None:
    assert parse_when(text, now=1_000_000.0) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "7x", "2026-13-01"])
def test_parse_when_refuses_what_it_cannot_read(text: str) -> None:
    with pytest.raises(ValueError, match="time"):
        parse_when(text, now=0.0)
