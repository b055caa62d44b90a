"""Provider modules' pure parts: request bodies, URL mapping, message translation."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pipeline.agent import TRANSFER_TOOL
from pipeline.providers import cartesia_tts, openai_llm
from pipeline.providers.base import STTEventKind
from pipeline.providers.deepgram_stt import environment_for, event_from_message


@pytest.mark.parametrize(
    ("base", "ws", "http"),
    [
        ("wss://api.deepgram.com", "wss://api.deepgram.com", "https://api.deepgram.com"),
        ("https://dg.example/", "wss://dg.example", "https://dg.example"),
        ("ws://127.0.0.1:9000", "ws://127.0.0.1:9000", "http://127.0.0.1:9000"),
        ("http://127.0.0.1:9000", "ws://127.0.0.1:9000", "http://127.0.0.1:9000"),
    ],
)
def test_deepgram_environment_from_base_url(base: str, ws: str, http: str) -> None:
    env = environment_for(base)
    assert (env.production, env.base) == (ws, http)


def test_deepgram_environment_rejects_other_schemes() -> None:
    with pytest.raises(ValueError, match="DEEPGRAM_BASE_URL"):
        environment_for("api.deepgram.com")


def _results(text: str, *, is_final: bool, speech_final: bool = False) -> SimpleNamespace:
    alternative = SimpleNamespace(transcript=text)
    return SimpleNamespace(
        type="Results",
        is_final=is_final,
        speech_final=speech_final,
        channel=SimpleNamespace(alternatives=[alternative]),
    )


def test_deepgram_messages_become_events() -> None:
    final = event_from_message(_results(" Hello there. ", is_final=True, speech_final=True))
    assert final is not None
    assert (final.kind, final.text, final.speech_final) == (
        STTEventKind.FINAL,
        "Hello there.",
        True,
    )
    interim = event_from_message(_results("hel", is_final=False))
    assert interim is not None and interim.kind is STTEventKind.INTERIM
    assert event_from_message(_results("", is_final=False)) is None  # silence
    empty_final = event_from_message(_results("", is_final=True))
    assert empty_final is not None and empty_final.text == ""
    started = event_from_message(SimpleNamespace(type="SpeechStarted"))
    assert started is not None and started.kind is STTEventKind.SPEECH_STARTED
    end = event_from_message(SimpleNamespace(type="UtteranceEnd"))
    assert end is not None and end.kind is STTEventKind.UTTERANCE_END
    assert event_from_message(SimpleNamespace(type="Metadata")) is None


def test_openai_request_body_streams_and_offers_tools_only_when_given() -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    body = openai_llm.request_body("gpt-4o-mini", messages, (), temperature=0.5, max_tokens=99)
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"] == messages
    assert "tools" not in body
    with_tool = openai_llm.request_body(
        "gpt-4o-mini", messages, (TRANSFER_TOOL,), temperature=0.5, max_tokens=99
    )
    (tool,) = with_tool["tools"]
    assert tool["type"] == "function"
    assert tool["function"]["name"] == "transfer_to_agent"
    assert tool["function"]["parameters"] == {"type": "object", "properties": {}, "required": []}


def test_openai_tool_arguments_parse_leniently() -> None:
    assert openai_llm.parse_arguments('{"reason": "asked"}') == {"reason": "asked"}
    assert openai_llm.parse_arguments("") == {}
    assert openai_llm.parse_arguments("{broken") == {}
    assert openai_llm.parse_arguments("[1]") == {}


def test_cartesia_request_body_is_raw_pcm_at_the_render_rate() -> None:
    body = cartesia_tts.request_body(
        text="Hello.",
        model="sonic-3",
        voice_id="v-1",
        language="en",
        sample_rate=44100,
        context_id="ctx",
    )
    assert body == {
        "model_id": "sonic-3",
        "transcript": "Hello.",
        "voice": {"mode": "id", "id": "v-1"},
        "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 44100},
        "language": "en",
        "context_id": "ctx",
    }


@pytest.mark.parametrize(
    ("status", "body", "retryable", "fragment"),
    [
        (500, b'{"message": "overloaded"}', True, "overloaded"),
        (429, b'{"title": "Too many"}', True, "Too many"),
        (400, b'{"error_code": "x", "message": "Invalid voice"}', False, "Invalid voice"),
        (401, b"not json", False, "not json"),
    ],
)
def test_cartesia_http_errors_map_to_provider_errors(
    status: int, body: bytes, retryable: bool, fragment: str
) -> None:
    error = cartesia_tts.error_from_response(status, body)
    assert error.retryable is retryable
    assert error.status == status
    assert fragment in error.message
