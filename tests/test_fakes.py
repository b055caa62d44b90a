"""The test kit's fake providers speak the real protocols: driven here by the real SDKs.

deepgram-sdk (live WebSocket), the openai SDK (chat completions streaming) and httpx
(Cartesia SSE) talk to the fakes over loopback sockets, configured only by base URLs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import sys
import time
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import websockets
from deepgram import AsyncDeepgramClient, DeepgramClientEnvironment
from deepgram.core.api_error import ApiError
from deepgram.listen.v1 import (
    ListenV1Metadata,
    ListenV1Results,
    ListenV1SpeechStarted,
    ListenV1UtteranceEnd,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam
from websockets.exceptions import ConnectionClosedError

from testkit import (
    FakeCartesia,
    FakeDeepgram,
    FakeOpenAI,
    FakeProviders,
    ListenOptions,
    TranscriptEngine,
    llm,
    tts,
)
from testkit.deepgram_engine import Message

pytestmark = [
    pytest.mark.timeout(30),
    # deepgram-sdk 7.17 imports websockets.exceptions.InvalidStatusCode (deprecated in
    # websockets 14+) when client.listen.v1 is first used; not yet in pyproject's filters.
    pytest.mark.filterwarnings(
        "ignore:websockets.exceptions.InvalidStatusCode is deprecated:DeprecationWarning"
    ),
]

RATE = 16000
FRAME = 640  # 20 ms at 16 kHz
DG_KEY, OA_KEY, CA_KEY = "dg-secret-key", "oa-secret-key", "ca-secret-key"
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
LISTEN: dict[str, Any] = {
    "model": "nova-3",
    "language": "en-US",
    "encoding": "linear16",
    "sample_rate": RATE,
    "channels": 1,
    "interim_results": True,
    "endpointing": 300,
    "utterance_end_ms": 1000,
    "vad_events": True,
    "smart_format": True,
    "punctuate": True,
}
LISTEN_QUERY = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in LISTEN.items()}
DG_TYPES = (ListenV1Results, ListenV1SpeechStarted, ListenV1UtteranceEnd, ListenV1Metadata)


# --- audio helpers ---------------------------------------------------------------------


def voiced(seconds: float, rate: int = RATE, rms: float = 3000.0) -> bytes:
    """Speech-like audio: a 140 Hz harmonic series with a 4 Hz syllable envelope."""
    t = np.arange(round(seconds * rate)) / rate
    wave_ = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 8))
    wave_ = wave_ * (0.6 + 0.4 * np.abs(np.sin(2 * np.pi * 4 * t)))
    wave_ = wave_ * rms / np.sqrt(np.mean(wave_**2))
    return bytes(wave_.astype("<i2").tobytes())


def silence(seconds: float, rate: int = RATE) -> bytes:
    return bytes(round(seconds * rate) * 2)


def noise(seconds: float, rms: float, rate: int = RATE) -> bytes:
    rng = np.random.default_rng(7)
    return (rng.standard_normal(round(seconds * rate)) * rms).astype("<i2").tobytes()


def frames(pcm: bytes, size: int = FRAME) -> Iterator[bytes]:
    for i in range(0, len(pcm), size):
        yield pcm[i : i + size]


def read_wav(path: Path) -> tuple[bytes, int]:
    with wave.open(str(path)) as wav:
        return wav.readframes(wav.getnframes()), wav.getframerate()


# --- Deepgram ---------------------------------------------------------------------------


@pytest.fixture
async def deepgram() -> AsyncIterator[FakeDeepgram]:
    async with FakeDeepgram(api_key=DG_KEY) as fake:
        yield fake


def dg_client(fake: FakeDeepgram, api_key: str = DG_KEY) -> AsyncDeepgramClient:
    http = f"http://127.0.0.1:{fake.port}"
    environment = DeepgramClientEnvironment(
        base=http, production=fake.url, agent=fake.url, agent_rest=http
    )
    return AsyncDeepgramClient(api_key=api_key, environment=environment)


async def send_audio(conn: Any, pcm: bytes) -> None:
    for frame in frames(pcm):
        await conn.send_media(frame)


async def receive_all(conn: Any) -> list[Any]:
    return [message async for message in conn]


async def receive_until(conn: Any, done: Any, timeout_s: float = 5.0) -> list[Any]:
    received: list[Any] = []
    async with asyncio.timeout(timeout_s):
        while not received or not done(received[-1]):
            received.append(await conn.recv())
    return received


def close_frame(error: ConnectionClosedError) -> tuple[int, str]:
    """(code, reason) of the close frame the server sent."""
    assert error.rcvd is not None
    return error.rcvd.code, error.rcvd.reason


def pending_close_fault(fake: FakeDeepgram) -> float | None:
    return fake.close_after_audio_s


def is_final(message: Any) -> bool:
    return isinstance(message, ListenV1Results) and bool(message.is_final)


async def test_deepgram_sdk_receives_a_whole_turn_as_typed_messages(
    deepgram: FakeDeepgram, caplog: pytest.LogCaptureFixture
) -> None:
    script = "Hello, I would like to know my account balance."
    deepgram.utterances.append(script)
    audio = silence(0.5) + voiced(1.2) + silence(1.5)
    async with dg_client(deepgram).listen.v1.connect(**LISTEN) as conn:
        await send_audio(conn, audio)
        await conn.send_close_stream()
        messages = await receive_all(conn)

    assert "Skipping unknown WebSocket message" not in caplog.text
    assert all(isinstance(m, DG_TYPES) for m in messages), messages
    started, *rest = messages
    assert isinstance(started, ListenV1SpeechStarted)
    assert started.channel == [0]
    assert started.timestamp == pytest.approx(0.5, abs=0.021)
    results = [m for m in rest if isinstance(m, ListenV1Results)]
    interims = [r for r in results if not r.is_final]
    assert len(interims) >= 3
    texts = [r.channel.alternatives[0].transcript for r in interims]
    assert texts[0] == "Hello,"
    assert [len(t.split()) for t in texts] == sorted(len(t.split()) for t in texts)
    assert all(r.speech_final is False for r in interims)

    final = next(r for r in results if r.is_final)
    assert final.speech_final is True
    assert final.from_finalize is False
    assert final.channel_index == [0, 1]
    assert final.start == 0.0
    assert final.duration == pytest.approx(2.0, abs=0.021)  # speech end + 300 ms
    alternative = final.channel.alternatives[0]
    assert alternative.transcript == script
    assert [w.punctuated_word for w in alternative.words] == script.split()
    assert alternative.words[0].word == "hello"
    assert alternative.words[0].start == pytest.approx(0.5, abs=0.021)
    assert alternative.words[-1].end == pytest.approx(1.7, abs=0.021)
    assert final.metadata.model_info.name == "general-nova-3"

    utterance_end, metadata = messages[-2:]
    assert isinstance(utterance_end, ListenV1UtteranceEnd)
    assert utterance_end.channel == [0, 1]
    assert utterance_end.last_word_end == alternative.words[-1].end
    assert messages.index(final) < messages.index(utterance_end)
    assert isinstance(metadata, ListenV1Metadata)
    assert metadata.duration == pytest.approx(3.2)
    assert metadata.channels == 1

    [record] = deepgram.connections
    assert record.query == LISTEN_QUERY
    assert record.auth_scheme == "token"
    assert DG_KEY not in repr(record) + json.dumps(record.headers)
    assert record.headers["User-Agent"].startswith("deepgram-sdk/")
    assert record.request_id == final.metadata.request_id == metadata.request_id
    assert bytes(record.audio) == audio
    assert record.audio_frames == len(audio) // FRAME
    assert record.closestream
    assert (record.close_code, record.closed_by, record.violations) == (1000, "server", [])
    started_at = record.first_sent_at("SpeechStarted")
    interim_at = record.first_sent_at("Results", is_final=False)
    final_at = record.first_sent_at("Results", speech_final=True)
    assert started_at is not None
    assert interim_at is not None
    assert final_at is not None
    assert started_at <= interim_at <= final_at
    assert record.final_transcripts == [script]
    json.dumps(deepgram.timeline())


async def test_deepgram_script_is_shared_across_connections(deepgram: FakeDeepgram) -> None:
    deepgram.utterances.extend(["First turn.", "Second turn."])
    heard = []
    for _ in range(3):
        async with dg_client(deepgram).listen.v1.connect(**LISTEN) as conn:
            await send_audio(conn, voiced(0.5) + silence(0.4))
            await conn.send_close_stream()
            messages = await receive_all(conn)
        heard += [m.channel.alternatives[0].transcript for m in messages if is_final(m)]
    assert heard == ["First turn.", "Second turn.", "hello there"]


async def test_deepgram_finalize_flushes_speech_in_progress(deepgram: FakeDeepgram) -> None:
    deepgram.utterances.append("Wait, stop.")
    async with dg_client(deepgram).listen.v1.connect(**LISTEN) as conn:
        await send_audio(conn, voiced(0.6))
        await conn.send_finalize()
        messages = await receive_until(conn, is_final)
        await conn.send_close_stream()
        rest = await receive_all(conn)
    final = messages[-1]
    assert final.from_finalize is True
    assert final.speech_final is False
    assert final.channel.alternatives[0].transcript == "Wait, stop."
    assert [type(m) for m in rest] == [ListenV1Metadata]
    assert deepgram.connections[0].finalizes == 1


async def test_deepgram_endpointing_false_ends_turns_with_utterance_end(
    deepgram: FakeDeepgram,
) -> None:
    async with dg_client(deepgram).listen.v1.connect(**{**LISTEN, "endpointing": "false"}) as conn:
        await send_audio(conn, voiced(0.5) + silence(1.2))
        await conn.send_close_stream()
        messages = await receive_all(conn)
    kinds = [type(m).__name__ for m in messages if not isinstance(m, ListenV1Results)]
    assert kinds == ["ListenV1SpeechStarted", "ListenV1UtteranceEnd", "ListenV1Metadata"]
    [final] = [m for m in messages if is_final(m)]
    assert (final.speech_final, final.channel.alternatives[0].transcript) == (False, "hello there")
    assert messages.index(final) == len(messages) - 3


async def test_deepgram_empty_binary_frame_is_a_violation_that_ends_the_stream(
    deepgram: FakeDeepgram,
) -> None:
    async with dg_client(deepgram).listen.v1.connect(**LISTEN) as conn:
        await send_audio(conn, voiced(0.5))
        await conn.send_media(b"")
        messages = await receive_all(conn)
    assert [type(m) for m in messages[-2:]] == [ListenV1Results, ListenV1Metadata]
    assert is_final(messages[-2])
    record = deepgram.connections[0]
    assert record.close_code == 1000
    assert not record.closestream
    assert record.violations == ["empty binary frame (ends the stream like CloseStream)"]


async def test_deepgram_idle_timeout_and_keepalive(deepgram: FakeDeepgram) -> None:
    deepgram.idle_timeout_s = 0.3
    async with dg_client(deepgram).listen.v1.connect(**LISTEN) as conn:
        for _ in range(8):  # 0.8 s kept alive by KeepAlive alone
            await conn.send_keep_alive()
            await asyncio.sleep(0.1)
        assert not deepgram.connections[0].closed
        with pytest.raises(ConnectionClosedError) as closed:
            await receive_all(conn)
    assert close_frame(closed.value) == (1011, "NET-0001")
    record = deepgram.connections[0]
    assert record.keepalives == 8
    assert (record.close_code, record.close_reason) == (1011, "NET-0001")


async def test_deepgram_close_fault_applies_to_the_next_connection_only(
    deepgram: FakeDeepgram,
) -> None:
    deepgram.close_after_audio_s = 0.5
    async with dg_client(deepgram).listen.v1.connect(**LISTEN) as conn:
        await send_audio(conn, silence(0.5))  # the fault closes the stream here
        with pytest.raises(ConnectionClosedError) as closed:
            await receive_all(conn)
    assert close_frame(closed.value) == (1011, "NET-0000")
    assert pending_close_fault(deepgram) is None
    assert deepgram.connections[0].audio_bytes == RATE  # closed after 0.5 s of audio

    async with dg_client(deepgram).listen.v1.connect(**LISTEN) as conn:
        await send_audio(conn, silence(1.0))
        await conn.send_close_stream()
        assert [type(m) for m in await receive_all(conn)] == [ListenV1Metadata]
    assert deepgram.connections[1].close_code == 1000


async def test_deepgram_stall_accepts_audio_but_sends_nothing(deepgram: FakeDeepgram) -> None:
    deepgram.stall = True
    async with dg_client(deepgram).listen.v1.connect(**LISTEN) as conn:
        await send_audio(conn, voiced(0.5) + silence(1.5))
        await conn.send_close_stream()
        assert await receive_all(conn) == []
    assert deepgram.connections[0].audio_bytes == 2 * RATE * 2


async def test_deepgram_result_delay_holds_results_back(deepgram: FakeDeepgram) -> None:
    deepgram.result_delay_ms = 250
    async with dg_client(deepgram).listen.v1.connect(**LISTEN) as conn:
        sent_at = time.monotonic()
        await send_audio(conn, voiced(0.3) + silence(0.4))
        first = await conn.recv()
        assert time.monotonic() - sent_at >= 0.25
        assert isinstance(first, ListenV1SpeechStarted)
        await conn.send_close_stream()
        rest = await receive_all(conn)
    assert isinstance(rest[-1], ListenV1Metadata)
    assert any(is_final(m) for m in rest)


async def test_deepgram_rejects_bad_credentials_and_refused_handshakes(
    deepgram: FakeDeepgram,
) -> None:
    with pytest.raises(ApiError) as rejected:
        async with dg_client(deepgram, api_key="wrong").listen.v1.connect(**LISTEN):
            pass
    assert rejected.value.status_code == 401

    with pytest.raises(websockets.InvalidStatus) as raw:
        async with websockets.connect(f"{deepgram.url}/v1/listen?encoding=linear16"):
            pass
    assert raw.value.response.status_code == 401
    assert raw.value.response.headers["dg-error"] == "Invalid credentials."
    assert raw.value.response.headers["dg-request-id"]

    deepgram.refuse_status = 503
    with pytest.raises(ApiError) as refused:
        async with dg_client(deepgram).listen.v1.connect(**LISTEN):
            pass
    assert refused.value.status_code == 503
    assert [r.status for r in deepgram.rejections] == [401, 401, 503]
    assert not deepgram.connections  # rejected handshakes never become connections


async def test_deepgram_closes_undecodable_audio_with_data_0000(deepgram: FakeDeepgram) -> None:
    async with dg_client(deepgram).listen.v1.connect(**{**LISTEN, "encoding": "mulaw"}) as conn:
        with pytest.raises(ConnectionClosedError) as closed:
            await receive_all(conn)
    assert close_frame(closed.value) == (1008, "DATA-0000")
    assert "mulaw" in deepgram.connections[0].violations[0]


# --- the transcription engine, sans I/O ---------------------------------------------------


def engine(rate: int = RATE, **query: str) -> TranscriptEngine:
    options = ListenOptions.from_query({**LISTEN_QUERY, "sample_rate": str(rate), **query})
    return TranscriptEngine(options, next_transcript=lambda: "one two three", request_id="r")


def kinds(messages: list[Message]) -> list[str]:
    def kind(m: Message) -> str:
        if m["type"] != "Results":
            return str(m["type"])
        return "final" if m["is_final"] else "interim"

    return [kind(m) for m in messages]


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.wav")), ids=lambda p: p.name)
def test_vad_hears_each_espeak_fixture_as_one_utterance(path: Path) -> None:
    pcm, rate = read_wav(path)
    dg = engine(rate)
    messages = dg.feed(pcm) + dg.feed(silence(1.5, rate))
    assert [k for k in kinds(messages) if k != "interim"] == [
        "SpeechStarted",
        "final",
        "UtteranceEnd",
    ]
    assert messages[0]["timestamp"] == pytest.approx(0.3, abs=0.03)  # fixtures lead with 0.3 s
    final = next(m for m in messages if m["type"] == "Results" and m["is_final"])
    assert final["speech_final"] is True


def test_vad_treats_low_noise_as_silence_and_reports_empty_finals() -> None:
    dg = engine()
    messages = dg.feed(noise(7.0, rms=150.0))  # about -47 dBFS
    assert kinds(messages) == ["final", "final"]  # every 3 s of audio
    assert [m["channel"]["alternatives"][0]["transcript"] for m in messages] == ["", ""]
    assert [m["start"] for m in messages] == [0.0, 3.0]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=1, max_value=2500), min_size=1, max_size=40))
def test_engine_results_do_not_depend_on_how_audio_is_chunked(sizes: list[int]) -> None:
    audio = silence(0.3) + voiced(0.7) + silence(1.3) + voiced(0.4) + silence(0.5)
    whole = engine()
    expected = whole.feed(audio)
    chunked = engine()
    got: list[Message] = []
    position = 0
    for size in sizes * (len(audio) // sum(sizes) + 1):
        got += chunked.feed(audio[position : position + size])
        position += size
        if position >= len(audio):
            break
    for message in expected + got:
        message.get("metadata", {}).pop("request_id", None)
    assert got == expected
    assert kinds(expected).count("SpeechStarted") == 2


# --- OpenAI -----------------------------------------------------------------------------


@pytest.fixture
async def fake_llm() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(api_key=OA_KEY, first_token_ms=30, per_token_ms=5) as fake:
        yield fake


def oa_client(fake: FakeOpenAI, api_key: str = OA_KEY) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=fake.base_url, api_key=api_key, max_retries=0)


@pytest.fixture
async def client(fake_llm: FakeOpenAI) -> AsyncIterator[AsyncOpenAI]:
    async with oa_client(fake_llm) as sdk:
        yield sdk


USER: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "When?"},
]
TRANSFER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "transfer_to_agent",
        "description": "Transfer the caller to a human.",
        "parameters": {"type": "object", "properties": {"reason": {"type": "string"}}},
    },
}


async def test_openai_sdk_streams_scripted_text(fake_llm: FakeOpenAI, client: AsyncOpenAI) -> None:
    text = "Sure. We open at nine tomorrow."
    fake_llm.replies.append(llm.Text(text, first_token_ms=80))
    started = time.monotonic()
    stream = await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=USER,
        stream=True,
        stream_options={"include_usage": True},
        tools=[TRANSFER_TOOL],
    )
    chunks = [chunk async for chunk in stream]
    assert time.monotonic() - started >= 0.08

    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1
    first = chunks[0].choices[0].delta
    assert (first.role, first.content) == ("assistant", "")
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert usage_chunk.usage.completion_tokens == 6

    [request] = fake_llm.requests
    assert request.model == "gpt-4o-mini"
    assert request.messages == USER
    assert request.tools == [TRANSFER_TOOL]
    assert request.stream_options == {"include_usage": True}
    assert request.auth_scheme == "bearer"
    assert OA_KEY not in json.dumps(request.headers)
    assert request.completed
    assert not request.disconnected
    assert request.first_byte_at is not None
    assert request.ended_at is not None
    assert request.first_byte_at - request.received_at >= 0.08
    assert request.ended_at > request.first_byte_at


async def test_openai_default_reply_echoes_the_last_user_message(
    fake_llm: FakeOpenAI, client: AsyncOpenAI
) -> None:
    messages: Any = [*USER, {"role": "assistant", "content": "Hi."}]
    messages.append({"role": "user", "content": [{"type": "text", "text": "Open  when?"}]})
    stream = await client.chat.completions.create(model="m", messages=messages, stream=True)
    chunks = [chunk async for chunk in stream]
    content = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert content == "You said: Open when. Is there anything else?"
    assert all(c.usage is None for c in chunks)  # no include_usage, no usage chunk

    completion = await client.chat.completions.create(model="m", messages=USER)
    assert completion.choices[0].message.content == "You said: When. Is there anything else?"
    assert completion.choices[0].finish_reason == "stop"


async def test_openai_sdk_accumulates_a_tool_call_stream(
    fake_llm: FakeOpenAI, client: AsyncOpenAI
) -> None:
    arguments = '{"reason": "caller asked for a human"}'
    fake_llm.replies.append(
        llm.Tool("transfer_to_agent", arguments, text_before="One moment.", call_id="call_1")
    )
    async with client.chat.completions.stream(
        model="gpt-4o-mini", messages=USER, tools=[TRANSFER_TOOL]
    ) as stream:
        async for _ in stream:
            pass
        completion = await stream.get_final_completion()
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "One moment."
    [call] = choice.message.tool_calls or []
    assert call.id == "call_1"
    assert call.type == "function"
    assert (call.function.name, call.function.arguments) == ("transfer_to_agent", arguments)


async def test_openai_http_errors_raise_the_sdk_exceptions(
    fake_llm: FakeOpenAI, client: AsyncOpenAI
) -> None:
    fake_llm.replies.extend([llm.HttpError(429), llm.HttpError(500, "boom")])
    with pytest.raises(openai.RateLimitError) as limited:
        await client.chat.completions.create(model="m", messages=USER, stream=True)
    assert limited.value.response.headers["retry-after"] == "1"
    assert limited.value.code == "rate_limit_exceeded"
    with pytest.raises(openai.InternalServerError, match="boom"):
        await client.chat.completions.create(model="m", messages=USER, stream=True)
    async with oa_client(fake_llm, "wrong") as intruder:
        with pytest.raises(openai.AuthenticationError) as denied:
            await intruder.chat.completions.create(model="m", messages=USER)
    assert denied.value.code == "invalid_api_key"
    assert denied.value.type == "invalid_request_error"
    assert [r.status for r in fake_llm.requests] == [429, 500, 401]


async def test_openai_mid_stream_error_raises_api_error(
    fake_llm: FakeOpenAI, client: AsyncOpenAI
) -> None:
    fake_llm.replies.append(llm.MidStreamError("Let me check", message="overloaded"))
    stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
    received: list[str] = []

    async def consume() -> None:
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")

    with pytest.raises(openai.APIError, match="overloaded"):
        await consume()
    assert "".join(received) == "Let me check"


async def test_openai_stall_ends_cleanly_when_the_client_leaves(
    fake_llm: FakeOpenAI, client: AsyncOpenAI
) -> None:
    fake_llm.replies.append(llm.Stall(after_text="Hmm"))
    stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
    iterator = stream.__aiter__()
    assert (await iterator.__anext__()).choices[0].delta.role == "assistant"
    assert (await iterator.__anext__()).choices[0].delta.content == "Hmm"
    await stream.close()
    [request] = fake_llm.requests
    await fake_llm.wait_until(lambda: request.disconnected)
    assert request.ended_at is not None
    assert not request.completed


# --- Cartesia ---------------------------------------------------------------------------


@pytest.fixture
async def cartesia() -> AsyncIterator[FakeCartesia]:
    async with FakeCartesia(api_key=CA_KEY, first_audio_ms=60, realtime_factor=8) as fake:
        yield fake


def tts_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model_id": "sonic-3",
        "transcript": "Hello there, how can I help?",
        "voice": {"mode": "id", "id": "voice-1"},
        "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": RATE},
        "language": "en",
        "context_id": "ctx-1",
    }
    return {**body, **overrides}


TTS_HEADERS = {"Cartesia-Version": "2025-04-16", "X-API-Key": CA_KEY}


async def tts_events(
    fake: FakeCartesia, body: Any, headers: dict[str, str] = TTS_HEADERS
) -> tuple[int, list[dict[str, Any]], list[float]]:
    """(status, events or [error JSON], arrival times) of one /tts/sse request."""
    async with (
        httpx.AsyncClient(base_url=fake.base_url) as client,
        client.stream("POST", "/tts/sse", json=body, headers=headers) as response,
    ):
        if response.status_code != 200:
            return response.status_code, [json.loads(await response.aread())], []
        assert response.headers["content-type"].startswith("text/event-stream")
        events, arrivals = [], []
        async for line in response.aiter_lines():
            if line:
                assert line.startswith("data: ")
                events.append(json.loads(line.removeprefix("data: ")))
                arrivals.append(time.monotonic())
        return 200, events, arrivals


async def test_cartesia_streams_paced_uneven_chunks_of_tone(cartesia: FakeCartesia) -> None:
    started = time.monotonic()
    status, events, arrivals = await tts_events(cartesia, tts_body())
    assert status == 200
    *chunks, done = events
    assert done == {"type": "done", "done": True, "status_code": 206, "context_id": "ctx-1"}
    assert {(e["type"], e["done"], e["status_code"], e["context_id"]) for e in chunks} == {
        ("chunk", False, 206, "ctx-1")
    }
    assert all(isinstance(e["step_time"], float | int) for e in chunks)
    pcm = [base64.b64decode(e["data"]) for e in chunks]
    sizes = [len(p) // 2 for p in pcm]
    assert sizes[:4] == [592, 848, 1296, 592]  # 37/53/81 ms at 16 kHz
    assert all(len(p) % 2 == 0 for p in pcm)
    assert all(s % (RATE // 10) for s in sizes)  # never a multiple of 100 ms
    audio = b"".join(pcm)
    assert len(audio) // 2 == round(len("Hello there, how can I help?") * 0.065 * RATE)
    assert arrivals[0] - started >= 0.06
    assert arrivals[-1] - arrivals[0] == pytest.approx(1.82 / 8, abs=0.1)
    samples = np.frombuffer(audio, "<i2").astype(np.float64)
    assert 4000 < np.sqrt(np.mean(samples**2)) < 7000
    # the fake Deepgram hears the fake voice as one utterance (echo/barge-in tests)
    dg = engine()
    heard = kinds(dg.feed(audio) + dg.feed(silence(1.5)))
    assert [k for k in heard if k != "interim"] == ["SpeechStarted", "final", "UtteranceEnd"]

    [request] = cartesia.requests
    assert request.auth_scheme == "x-api-key"
    assert CA_KEY not in json.dumps(request.headers)
    assert request.cartesia_version == "2025-04-16"
    assert request.transcript == "Hello there, how can I help?"
    assert request.completed
    assert request.chunks_sent == len(chunks)
    assert request.first_chunk_at is not None
    assert request.first_chunk_at <= arrivals[0]


@pytest.mark.parametrize("rate", [8000, 22050, 24000, 44100, 48000])
async def test_cartesia_honours_every_documented_sample_rate(
    cartesia: FakeCartesia, rate: int
) -> None:
    cartesia.realtime_factor = 0
    fmt = {"container": "raw", "encoding": "pcm_s16le", "sample_rate": rate}
    status, events, _ = await tts_events(cartesia, tts_body(transcript="Hi.", output_format=fmt))
    assert status == 200
    audio = b"".join(base64.b64decode(e["data"]) for e in events if e["type"] == "chunk")
    assert len(audio) // 2 == int(rate * 0.2)  # the 200 ms minimum


@pytest.mark.parametrize("voice", ["voice-1", {"id": "voice-1"}, {"mode": "id", "id": "voice-1"}])
async def test_cartesia_accepts_each_voice_form(cartesia: FakeCartesia, voice: Any) -> None:
    bearer = {"Cartesia-Version": "2026-03-01", "Authorization": f"Bearer {CA_KEY}"}
    status, events, _ = await tts_events(cartesia, tts_body(voice=voice), bearer)
    assert (status, events[-1]["type"]) == (200, "done")
    assert cartesia.requests[0].auth_scheme == "bearer"


@pytest.mark.parametrize(
    ("body", "headers", "status", "error_code"),
    [
        (tts_body(), {"Cartesia-Version": "2025-04-16", "X-API-Key": "wrong"}, 401, "unauthorized"),
        (tts_body(), {"Cartesia-Version": "2025-04-16"}, 401, "unauthorized"),
        (tts_body(), {"X-API-Key": CA_KEY}, 400, "missing_version"),
        (tts_body(model_id="sonic-english"), TTS_HEADERS, 400, "model_not_found"),
        (tts_body(transcript=""), TTS_HEADERS, 400, "invalid_request"),
        (tts_body(voice={"mode": "embedding", "embedding": [0.1]}), TTS_HEADERS, 400, None),
        (
            tts_body(
                output_format={"container": "raw", "encoding": "pcm_s16le", "sample_rate": 11025}
            ),
            TTS_HEADERS,
            400,
            "invalid_request",
        ),
        (
            tts_body(
                output_format={"container": "raw", "encoding": "pcm_f32le", "sample_rate": RATE}
            ),
            TTS_HEADERS,
            400,
            "invalid_request",
        ),
    ],
    ids=["bad-key", "no-key", "no-version", "retired-model", "empty", "voice-mode", "rate", "enc"],
)
async def test_cartesia_rejects_like_the_api(
    cartesia: FakeCartesia,
    body: dict[str, Any],
    headers: dict[str, str],
    status: int,
    error_code: str | None,
) -> None:
    got_status, [error], _ = await tts_events(cartesia, body, headers)
    assert got_status == status
    assert set(error) == {"error_code", "message", "title", "request_id"}
    assert error_code is None or error["error_code"] == error_code
    assert cartesia.requests[0].status == status


async def test_cartesia_scripted_faults(cartesia: FakeCartesia) -> None:
    cartesia.faults.extend(
        [tts.ErrorEvent(after_chunks=2, message="overloaded"), tts.HttpError(503)]
    )
    status, events, _ = await tts_events(cartesia, tts_body())
    assert status == 200
    assert [e["type"] for e in events] == ["chunk", "chunk", "error"]
    error = events[-1]
    assert (error["done"], error["status_code"], error["message"]) == (True, 500, "overloaded")
    assert {"title", "error_code", "request_id"} <= set(error)
    status, _, _ = await tts_events(cartesia, tts_body())
    assert status == 503
    status, events, _ = await tts_events(cartesia, tts_body())
    assert (status, events[-1]["type"]) == (200, "done")


async def test_cartesia_stall_ends_cleanly_when_the_client_leaves(cartesia: FakeCartesia) -> None:
    cartesia.faults.append(tts.Stall(after_chunks=1))
    async with (
        httpx.AsyncClient(base_url=cartesia.base_url) as client,
        client.stream("POST", "/tts/sse", json=tts_body(), headers=TTS_HEADERS) as response,
    ):
        lines = response.aiter_lines()
        assert json.loads((await anext(lines)).removeprefix("data: "))["type"] == "chunk"
    [request] = cartesia.requests
    await cartesia.wait_until(lambda: request.disconnected)
    assert request.chunks_sent == 1
    assert not request.completed


# --- together, and as a process ---------------------------------------------------------


async def test_fake_providers_env_and_timeline_and_no_leftover_tasks() -> None:
    async with FakeProviders() as fakes:
        env = fakes.env()
        assert set(env) == {
            "DEEPGRAM_BASE_URL",
            "DEEPGRAM_API_KEY",
            "OPENAI_BASE_URL",
            "OPENAI_API_KEY",
            "CARTESIA_BASE_URL",
            "CARTESIA_API_KEY",
            "CARTESIA_VOICE_ID",
        }
        assert env["DEEPGRAM_BASE_URL"] == f"ws://127.0.0.1:{fakes.deepgram.port}"
        assert env["OPENAI_BASE_URL"].endswith("/v1")
        async with AsyncOpenAI(
            base_url=env["OPENAI_BASE_URL"], api_key=env["OPENAI_API_KEY"]
        ) as client:
            await client.chat.completions.create(model="m", messages=USER)
        async with httpx.AsyncClient() as http:
            timeline = (await http.get(fakes.timeline_url)).json()
        assert set(timeline) == {"now", "stt", "llm", "tts"}
        assert [r["status"] for r in timeline["llm"]] == [200]
    leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert leftover == []


async def test_cli_serve_prints_env_then_stops_on_sigterm() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "testkit",
        "serve",
        "--llm-first-token-ms",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        env = json.loads(await asyncio.wait_for(process.stdout.readline(), 20))
        assert env["OPENAI_API_KEY"] == "test-openai-key"
        timeline_url = env["OPENAI_BASE_URL"].removesuffix("/v1") + "/_fake/timeline"
        async with httpx.AsyncClient() as http:
            response = await http.get(timeline_url, params={"since": time.monotonic()})
        assert response.json()["stt"] == []
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 10)
    assert process.returncode == 0, stderr.decode()
