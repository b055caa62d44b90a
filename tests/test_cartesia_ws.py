"""Cartesia over WebSocket: the real ``websockets`` client against the project's fake."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from config.settings import CartesiaSettings
from pipeline.providers.base import ContextTextToSpeech, ProviderError, ProviderTimeout
from pipeline.providers.cartesia_ws import CartesiaWebSocketTTS, websocket_url
from pipeline.retry import RetryPolicy
from testkit import FakeCartesia
from testkit.cartesia_script import ErrorEvent, HttpError, Stall
from testkit.providers import DEFAULT_KEYS
from tests.caller import eventually

KEY = DEFAULT_KEYS["cartesia"]


@pytest.fixture
async def fake() -> AsyncIterator[FakeCartesia]:
    async with FakeCartesia(api_key=KEY, first_audio_ms=20, realtime_factor=0) as tts:
        yield tts


FAST_REOPEN = RetryPolicy(base_s=0.02, cap_s=0.1)


def client(fake: FakeCartesia, contexts_per_socket: int = 32, **kw: Any) -> CartesiaWebSocketTTS:
    options: dict[str, Any] = {
        "api_key": KEY,
        "voice_id": "voice-1",
        "base_url": fake.base_url,
        "first_audio_timeout_s": 2.0,
        "idle_timeout_s": 2.0,
        **kw,
    }
    return CartesiaWebSocketTTS(
        CartesiaSettings(**options), contexts_per_socket=contexts_per_socket, reopen=FAST_REOPEN
    )


def tts_settings(fake: FakeCartesia, **kw: Any) -> CartesiaSettings:
    options: dict[str, Any] = {"api_key": KEY, "voice_id": "voice-1", "base_url": fake.base_url}
    return CartesiaSettings(**{**options, **kw})


def expected_bytes(fake: FakeCartesia, text: str, rate: int) -> int:
    ms = max(fake.settings.min_audio_ms, len(text) * fake.settings.ms_per_char)
    return int(rate * ms / 1000) * 2


def test_websocket_url() -> None:
    assert websocket_url("https://api.cartesia.ai/") == "wss://api.cartesia.ai/tts/websocket"
    assert websocket_url("http://127.0.0.1:9") == "ws://127.0.0.1:9/tts/websocket"


async def test_one_line_in_its_own_context(fake: FakeCartesia) -> None:
    tts = client(fake)
    assert isinstance(tts, ContextTextToSpeech)
    try:
        pcm = b"".join([p async for p in tts.synthesize("Hello there.", 16000)])
    finally:
        await tts.aclose()
    assert len(pcm) == expected_bytes(fake, "Hello there. ", 16000)
    (record,) = fake.requests
    assert record.transport == "websocket"
    assert record.completed and record.body["continue"] is True
    assert record.body["voice"] == {"mode": "id", "id": "voice-1"}
    assert record.body["output_format"]["sample_rate"] == 16000
    assert fake.socket_auth == ["x-api-key"]


async def test_a_reply_pushed_sentence_by_sentence_is_one_context(fake: FakeCartesia) -> None:
    tts = client(fake)
    sentences = ["Sure.", "We open at nine tomorrow.", "Anything else?"]
    try:
        async with tts.context(16000) as ctx:

            async def feed() -> None:
                for sentence in sentences:
                    await ctx.push(sentence)
                    await asyncio.sleep(0.05)  # the LLM writing
                await ctx.end()

            feeder = asyncio.create_task(feed())
            pcm = b"".join([p async for p in ctx.audio()])
            await feeder
        async with tts.context(16000) as again:  # the next reply: same socket
            await again.push("Bye.")
            await again.end()
            [p async for p in again.audio()]
    finally:
        await tts.aclose()
    assert len(pcm) == sum(expected_bytes(fake, s + " ", 16000) for s in sentences)
    assert len(ctx.word_ends_s) == sum(len(s.split()) for s in sentences)
    assert ctx.word_ends_s == sorted(ctx.word_ends_s)
    assert ctx.word_ends_s[-1] == pytest.approx(len(pcm) / 2 / 16000, abs=0.01)
    contexts = {r.context_id for r in fake.requests}
    assert len(contexts) == 2 and fake.sockets_opened == 1
    assert fake.cancels == []


async def test_many_contexts_share_a_small_pool(fake: FakeCartesia) -> None:
    tts = client(fake, contexts_per_socket=2)

    async def line(i: int) -> int:
        async with tts.context(8000) as ctx:
            await ctx.push(f"Line number {i}.")
            await ctx.end()
            return len(b"".join([p async for p in ctx.audio()]))

    try:
        sizes = await asyncio.gather(*(line(i) for i in range(5)))
    finally:
        await tts.aclose()
    assert all(size == expected_bytes(fake, "Line number 1. ", 8000) for size in sizes)
    assert fake.sockets_opened == 3  # 2 + 2 + 1 contexts


async def test_leaving_a_context_early_cancels_it(fake: FakeCartesia) -> None:
    fake.realtime_factor = 1.0  # audio flows for a while: there is something to cancel
    tts = client(fake)
    try:
        async with tts.context(16000) as ctx:
            await ctx.push("A long answer that the caller will interrupt quite early on.")
            async for _ in ctx.audio():
                break  # barge-in
        await fake.wait_until(lambda: fake.cancels)
        record = fake.requests[-1]
        await fake.wait_until(lambda: record.ended_at)
    finally:
        await tts.aclose()
    assert fake.cancels == [ctx.context_id]
    assert record.disconnected and not record.completed


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (429, True), (400, False)])
async def test_an_error_message_ends_the_context(
    fake: FakeCartesia, status: int, retryable: bool
) -> None:
    fake.faults.append(HttpError(status, "nope"))
    tts = client(fake)
    try:
        with pytest.raises(ProviderError) as caught:
            [p async for p in tts.synthesize("Hello.", 16000)]
        # The socket survives a context's error: the next line works.
        assert [p async for p in tts.synthesize("Hello.", 16000)]
    finally:
        await tts.aclose()
    assert caught.value.status == status and caught.value.retryable is retryable
    assert "nope" in str(caught.value)
    assert fake.sockets_opened == 1


async def test_error_after_audio(fake: FakeCartesia) -> None:
    fake.faults.append(ErrorEvent(after_chunks=1))
    tts = client(fake)
    got: list[bytes] = []

    async def listen() -> None:
        async for pcm in tts.synthesize("Hello there, how are you?", 16000):
            got.append(pcm)

    try:
        with pytest.raises(ProviderError, match="HTTP 500"):
            await listen()
    finally:
        await tts.aclose()
    assert len(got) == 1


async def test_stalled_audio_times_out_but_a_pause_in_the_text_does_not(
    fake: FakeCartesia,
) -> None:
    tts = client(fake, idle_timeout_s=0.3)
    try:
        async with tts.context(16000) as ctx:
            await ctx.push("First.")

            async def listen() -> list[bytes]:
                return [p async for p in ctx.audio()]

            listener = asyncio.create_task(listen())
            async with asyncio.timeout(10):
                while not ctx.word_ends_s:  # its timestamps: all pushed text is voiced  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            await asyncio.sleep(0.6)  # the LLM is slow: no fault of the TTS
            await ctx.push("Second.")
            await ctx.end()
            audio = await listener
        assert len(b"".join(audio)) == sum(
            expected_bytes(fake, s, 16000) for s in ("First. ", "Second. ")
        )
        fake.faults.append(Stall(after_chunks=1))
        with pytest.raises(ProviderTimeout) as caught:
            [p async for p in tts.synthesize("Hello there, how are you today?", 16000)]
    finally:
        await tts.aclose()
    assert caught.value.phase == "idle"


async def test_first_audio_timeout(fake: FakeCartesia) -> None:
    fake.first_audio_ms = 1000
    tts = client(fake, first_audio_timeout_s=0.1)
    try:
        with pytest.raises(ProviderTimeout) as caught:
            [p async for p in tts.synthesize("Hello.", 16000)]
    finally:
        await tts.aclose()
    assert caught.value.phase == "first_audio"


async def test_wrong_key_is_refused_at_the_handshake(fake: FakeCartesia) -> None:
    tts = client(fake, api_key="wrong-cartesia-key")
    with pytest.raises(ProviderError) as caught:
        [p async for p in tts.synthesize("Hello.", 16000)]
    assert caught.value.status == 401 and not caught.value.retryable
    assert await tts.warm_connections(1) == 0


async def test_a_dropped_socket_fails_its_contexts_and_the_next_one_reconnects(
    fake: FakeCartesia,
) -> None:
    fake.realtime_factor = 1.0
    tts = client(fake)
    try:
        assert await tts.warm_connections(2) == 2

        async def interrupted() -> None:
            async with tts.context(16000) as ctx:
                await ctx.push("A long answer that will not get to its end today.")
                async for _ in ctx.audio():
                    await fake.drop_sockets()

        with pytest.raises(ProviderError, match="socket") as caught:
            await interrupted()
        assert caught.value.retryable
        assert [p async for p in tts.synthesize("Hello.", 16000)]
    finally:
        await tts.aclose()
    assert fake.sockets_opened == 2


async def test_32k_calls_get_44k_audio_resampled(fake: FakeCartesia) -> None:
    tts = client(fake)
    try:
        pcm = b"".join([p async for p in tts.synthesize("Hello.", 32000)])
    finally:
        await tts.aclose()
    assert fake.requests[0].body["output_format"]["sample_rate"] == 44100
    assert abs(len(pcm) - expected_bytes(fake, "Hello. ", 32000)) <= 64


async def test_fake_takes_the_documented_query_credentials(fake: FakeCartesia) -> None:
    url = websocket_url(fake.base_url) + f"?api_key={KEY}&cartesia_version=2025-04-16"
    async with connect(url) as ws:
        request = {
            "context_id": "c1",
            "model_id": "sonic-3",
            "transcript": "Hi.",
            "voice": {"mode": "id", "id": "v"},
            "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 8000},
            "language": "en",
            "continue": False,
        }
        await ws.send(json.dumps(request))
        kinds: list[str] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                while not kinds or kinds[-1] != "done":
                    kinds.append(json.loads(await ws.recv())["type"])
        await ws.send(json.dumps({**request, "transcript": "Again."}))
        late = json.loads(await ws.recv())
    assert kinds[-1] == "done" and set(kinds[:-1]) == {"chunk"}
    assert late["type"] == "error" and late["status_code"] == 400  # the context has ended
    assert fake.socket_auth == ["query"]


async def test_a_reply_without_text_ends_without_a_word_to_cartesia(fake: FakeCartesia) -> None:
    tts = client(fake)
    try:
        assert await tts.warm_connections(1) == 1
        async with tts.context(16000) as ctx:  # e.g. a reply that is only a tool call
            await ctx.end()
            assert [p async for p in ctx.audio()] == []
    finally:
        await tts.aclose()
    assert list(fake.requests) == [] and fake.cancels == []


# --- the socket's life: dropped, refused, shared, shut down ------------------------------


async def test_a_socket_dropped_while_idle_is_reopened_before_the_next_line(
    fake: FakeCartesia,
) -> None:
    tts = client(fake)
    try:
        assert await tts.warm_connections(1) == 1
        assert await fake.drop_sockets() == 1  # e.g. Cartesia's idle close, a network drop
        await fake.wait_until(lambda: fake.sockets_opened == 2 and fake.sockets)
        await eventually(lambda: tts.pool.open_sockets == 1)
        assert [p async for p in tts.synthesize("Hello.", 16000)]
    finally:
        await tts.aclose()
    assert fake.sockets_opened == 2  # the line found the reopened socket: no handshake of its own
    assert tts.status() == {
        "transport": "websocket",
        "open_sockets": 0,
        "opened": 2,
        "reopening": False,
    }


async def test_a_frame_that_is_not_json_drops_the_socket_and_a_new_one_opens(
    fake: FakeCartesia,
) -> None:
    tts = client(fake)
    try:
        assert await tts.warm_connections(1) == 1
        assert await fake.send_raw("<html>502 Bad Gateway</html>") == 1
        await fake.wait_until(lambda: fake.socket_closes)
        await fake.wait_until(lambda: fake.sockets_opened == 2)
        assert [p async for p in tts.synthesize("Hello.", 16000)]
    finally:
        await tts.aclose()
    assert fake.socket_closes[0] == 1007  # we closed the unreadable one ourselves
    assert fake.sockets_opened == 2


async def test_reopening_backs_off_while_refused_and_recovers(fake: FakeCartesia) -> None:
    tts = client(fake)
    try:
        assert await tts.warm_connections(1) == 1
        fake.refuse_status = 503  # an outage: worth retrying
        await fake.drop_sockets()
        await fake.wait_until(lambda: len(fake.socket_refusals) >= 3)
        assert tts.status()["reopening"] is True and tts.pool.open_sockets == 0
        fake.refuse_status = None
        await fake.wait_until(lambda: fake.sockets_opened == 2)
        await eventually(lambda: tts.pool.open_sockets == 1)
        assert [p async for p in tts.synthesize("Hello.", 16000)]
    finally:
        await tts.aclose()
    assert fake.sockets_opened == 2


async def test_a_refused_key_stops_the_reopening_and_the_next_line_says_why(
    fake: FakeCartesia,
) -> None:
    tts = client(fake)
    try:
        assert await tts.warm_connections(1) == 1
        fake.refuse_status = 401  # the key was revoked: retrying cannot help
        await fake.drop_sockets()
        await fake.wait_until(lambda: fake.socket_refusals)
        await eventually(lambda: not tts.status()["reopening"])
        assert fake.socket_refusals == [401]
        with pytest.raises(ProviderError) as caught:
            [p async for p in tts.synthesize("Hello.", 16000)]
    finally:
        await tts.aclose()
    assert caught.value.status == 401 and not caught.value.retryable
    assert fake.socket_refusals == [401, 401]


async def test_another_voice_shares_the_socket_and_leaves_it_to_its_owner(
    fake: FakeCartesia,
) -> None:
    tts = client(fake)
    hindi = tts.speaking(tts_settings(fake, language="hi", voice_id="voice-hi"))
    try:
        assert [p async for p in tts.synthesize("Hello.", 16000)]
        assert [p async for p in hindi.synthesize("Namaste.", 16000)]
        await hindi.aclose()  # not its socket: still open for both
        assert [p async for p in hindi.synthesize("Dhanyavaad.", 16000)]
    finally:
        await tts.aclose()
    assert fake.sockets_opened == 1
    voices = [(r.body["language"], r.body["voice"]["id"]) for r in fake.requests]
    assert voices == [("en", "voice-1"), ("hi", "voice-hi"), ("hi", "voice-hi")]
    assert tts.pool.open_sockets == 0


async def test_closing_during_the_reopen_backoff_leaves_no_task(fake: FakeCartesia) -> None:
    tts = client(fake)
    slow = CartesiaWebSocketTTS(
        tts_settings(fake), reopen=RetryPolicy(base_s=30.0)
    )  # the first retry waits 30 s: aclose must not
    try:
        assert await slow.warm_connections(1) == 1
        fake.refuse_status = 503
        await fake.drop_sockets()
        await fake.wait_until(lambda: fake.socket_refusals)
        assert slow.status()["reopening"] is True
    finally:
        await slow.aclose()
        await tts.aclose()
    assert slow.status()["reopening"] is False
    names = {t.get_name() for t in asyncio.all_tasks()}
    assert not names & {"cartesia-ws-reopen", "cartesia-ws-reader"}
    with pytest.raises(ProviderError, match="shutting down"):
        await slow.pool.acquire()


async def test_fake_closes_an_idle_socket_but_not_one_that_is_voicing(fake: FakeCartesia) -> None:
    fake.realtime_factor = 1.0  # the context voices for longer than the idle limit
    fake.idle_close_s = 0.2
    url = websocket_url(fake.base_url) + f"?api_key={KEY}&cartesia_version=2025-04-16"
    async with connect(url) as ws:
        request = {
            "context_id": "c1",
            "model_id": "sonic-3",
            "transcript": "A line that takes a good while longer than the idle limit.",
            "voice": {"mode": "id", "id": "v"},
            "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 8000},
            "language": "en",
            "continue": False,
        }
        await ws.send(json.dumps(request))
        kinds = [json.loads(message)["type"] async for message in ws]  # until it closes
    assert kinds[-1] == "done" and set(kinds[:-1]) == {"chunk"}  # voiced in full first
    assert (ws.close_code, ws.close_reason) == (1000, "Idle timeout")
    assert fake.socket_closes == [1000]


async def test_fake_refuses_handshakes_while_told_to(fake: FakeCartesia) -> None:
    fake.refuse_status = 503
    with pytest.raises(InvalidStatus) as caught:
        async with connect(websocket_url(fake.base_url), additional_headers={"X-API-Key": KEY}):
            pass
    assert caught.value.response.status_code == 503
    assert fake.socket_refusals == [503] and fake.sockets_opened == 0
