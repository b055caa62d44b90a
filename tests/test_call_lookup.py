"""The simulator's HTTP look beside the call: where the app is, and the hint it prints."""

from __future__ import annotations

import pytest

from streamnode.lookup import (
    LOCAL_INSTALL,
    heard_in,
    http_base,
    hung_up_early,
    stream_token,
    unavailable_hint,
)


@pytest.mark.parametrize(
    ("ws_url", "base"),
    [
        ("ws://127.0.0.1:8000/voice", "http://127.0.0.1:8000"),
        ("wss://abc.ngrok-free.app/voice?sample_rate=8000", "https://abc.ngrok-free.app"),
        ("wss://host/agent/voice/s3cret-token", "https://host/agent"),
        ("ws://host:9000/", "http://host:9000"),
    ],
)
def test_http_base(ws_url: str, base: str) -> None:
    assert http_base(ws_url) == base


def test_hung_up_early_means_a_disconnect_and_no_reply() -> None:
    assert hung_up_early({"disconnect": 1}, [None], None)
    assert hung_up_early({"disconnect": 1}, [], None)
    assert not hung_up_early({"disconnect": 1}, [900.0], None)
    assert not hung_up_early({"disconnect": 0}, [None], None)
    # The server's own account wins: an apology that arrived late is still not an answer.
    assert hung_up_early({"disconnect": 1}, [900.0], [])
    assert not hung_up_early({"disconnect": 1}, [None], ["what are your opening hours"])


def test_the_hint_names_the_stage_and_the_fix() -> None:
    health = {
        "stages": {"stt": None, "llm": "local", "tts": "local"},
        "reasons": {
            "stt": "auto: no deepgram (DEEPGRAM_API_KEY not set)",
            "llm": "auto: local",
            "tts": "auto: local",
        },
    }
    hint = unavailable_hint(health)
    assert hint.startswith("the server cannot run a call: STT: auto: no deepgram")
    assert LOCAL_INSTALL in hint and "LLM" not in hint
    assert LOCAL_INSTALL in unavailable_hint(None)
    assert "every stage configured" in unavailable_hint({"stages": {}})


@pytest.mark.parametrize(
    ("ws_url", "token"),
    [
        ("ws://h/voice", None),
        ("wss://h/voice/s3cret", "s3cret"),
        ("wss://h/voice?token=abc&sample_rate=8000", "abc"),
    ],
)
def test_the_stream_token_goes_along(ws_url: str, token: str | None) -> None:
    assert stream_token(ws_url) == token


def test_heard_is_each_answered_turn() -> None:
    events = [
        {"kind": "call_started"},
        {"kind": "turn_timings", "user_text": "what are", "outcome": "unheard"},
        {"kind": "turn_timings", "user_text": "what are your opening hours", "outcome": "answered"},
        {"kind": "turn_timings", "user_text": None, "outcome": "answered"},  # a fixed line
    ]
    assert heard_in(events) == ["what are your opening hours"]
