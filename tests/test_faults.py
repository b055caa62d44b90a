"""Provider faults, injected through the fakes, end to end with the real SDKs.

Every end-to-end test proves the product rule for its fault: the caller hears speech
within 3 s of the end of their utterance, the call stays up (or ends with the goodbye
line), and afterwards no task or socket of the call remains. The pure pieces (error
mapping, retry decision, stall arithmetic, failover, the failed-turn count) are tested
without sockets at the bottom.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx2
import openai
import pytest

from pipeline.agent import AgentConfig
from pipeline.call.providers import Providers
from pipeline.call.reply import retry_delay
from pipeline.call.session import CallSession
from pipeline.call_record import CallRecord
from pipeline.providers.base import (
    LLMEvent,
    ProviderError,
    ProviderTimeout,
    STTEvent,
    STTEventKind,
    TextDelta,
    retry_after_s,
    retryable_status,
)
from pipeline.providers.cartesia_tts import error_event, error_from_response
from pipeline.providers.deepgram_stt import _Unanswered, is_speech
from pipeline.providers.failover_llm import FailoverLLM
from pipeline.providers.openai_llm import map_error
from pipeline.retry import PhaseClock
from pipeline.speech_cache import SpeechCache
from streamnode.client import StreamNodeClient
from testkit import ChatRequest, FakeOpenAI, FakeProviders, SpeechRequest, llm, tts
from testkit.memory import MemoryLine, ScriptedLLM, ScriptedSTT, ToneTTS
from tests.caller import (
    CallerLine,
    eventually,
    fixture_pcm,
    live_call,
    session_tasks,
    wait_until_quiet,
)
from tests.conftest import StartServer, VoiceServer

# Every fault below must end in speech, never silence: each wait for audio has a timeout,
# and the report() lines print how long the caller waited. How fast (the turn deadline,
# retries, Retry-After) is decided on virtual time in tests/test_call_core.py; wall-clock
# bounds here failed on a loaded 2-core CI box without anything being wrong.
QUESTION = "What time do you open tomorrow?"
ANSWER = "We open at nine."
FAST = {
    "greeting": "Hello.",
    "openai_first_token_timeout_s": 0.7,
    "openai_idle_timeout_s": 0.7,
    "cartesia_first_audio_timeout_s": 0.5,
    "cartesia_idle_timeout_s": 0.5,
    "deepgram_stall_timeout_s": 1.0,
}


async def start(fakes: FakeProviders, start_server: StartServer, **overrides: Any) -> VoiceServer:
    """Our server with short timeouts, once its fixed lines are cached."""
    # Shorter synthetic speech keeps the suite fast; it changes no protocol behaviour.
    fakes.cartesia.settings = dataclasses.replace(fakes.cartesia.settings, ms_per_char=20.0)
    server: VoiceServer = await start_server(**{**FAST, **overrides})
    lines = len(server.state.agent.fixed_lines()) * 2  # warmed at 16 kHz and 8 kHz
    # Faults queued before the warm-up finished would hit the warm-up instead of the call.
    await eventually(lambda: len(server.state.providers.cache) >= lines)
    return server


async def ask(node: StreamNodeClient, line: CallerLine, pcm: bytes) -> tuple[float, float]:
    """Say ``pcm``; (when the speech ended, seconds from then to the first playAudio)."""
    line.say(pcm)
    ended = await line.said()
    play = await node.wait_for("playAudio", after=ended, timeout=10)
    return ended, play.t - ended


def audio_ms_after(node: StreamNodeClient, t: float) -> float:
    return sum(e.duration_ms or 0 for e in node.events if e.kind == "playAudio" and e.t > t)


def cached_ms(server: VoiceServer, text: str) -> float:
    tts_provider = server.state.providers.tts
    assert tts_provider is not None
    pcm = server.state.providers.cache.get(tts_provider, text, 16000)
    assert pcm is not None, f"{text!r} is not cached"
    return len(pcm) / 32


def spoken(fakes: FakeProviders) -> list[str]:
    return [r.text for r in fakes.cartesia.requests]


async def assert_cleaned_up(server: VoiceServer, fakes: FakeProviders) -> None:
    """No call, no session task, and every provider socket of the call closed."""
    await eventually(lambda: not server.state.registry.active() and not session_tasks())
    requests: list[ChatRequest | SpeechRequest] = [
        *fakes.openai.requests,
        *fakes.cartesia.requests,
    ]
    await eventually(lambda: all(r.ended_at is not None for r in requests))
    # Over the WebSocket the socket is the process's: every context of the call has ended.
    await eventually(lambda: not any(socket.contexts for socket in fakes.cartesia.sockets))
    for request in requests:
        # A stream we gave up on must have been closed by us, not left to the server.
        assert request.status != 200 or request.completed or request.disconnected, request
    for connection in fakes.deepgram.connections:
        await connection.wait_closed(timeout_s=5)


def report(fault: str, seconds: float) -> None:
    print(f"\ntime-to-speech | {fault}: {seconds * 1000:.0f} ms")


# --- Deepgram ----------------------------------------------------------------------------


async def test_deepgram_refuses_401_caller_hears_apology_then_disconnect(
    fakes: FakeProviders, start_server: StartServer
) -> None:
    fakes.deepgram.refuse_status = 401
    server = await start(fakes, start_server)
    async with StreamNodeClient(sample_rate=16000) as node:
        await node.connect(server.url)
        sent_at = await node.send_metadata({"callid": "call-dg-401"})
        async with CallerLine(node, 16000):
            gone = await node.wait_for("disconnect", timeout=10)
    plays = [e for e in node.events if e.kind == "playAudio"]
    apology_ms = cached_ms(server, server.state.agent.unavailable_line)
    greeting_ms = cached_ms(server, "Hello.")
    assert sum(e.duration_ms or 0 for e in plays) >= greeting_ms + apology_ms - 1
    # The apology follows the greeting at once; both are cached, so both went out together.
    report("deepgram 401 (apology after call start)", plays[-1].t - sent_at)
    assert all(e.t < gone.t for e in plays)
    assert [r.status for r in fakes.deepgram.rejections] == [401]  # not retried: it cannot pass
    await assert_cleaned_up(server, fakes)


async def test_deepgram_closes_1011_mid_utterance_reconnects_and_answers(
    fakes: FakeProviders, start_server: StartServer
) -> None:
    fakes.deepgram.utterances.extend([QUESTION, QUESTION])
    fakes.openai.replies.append(llm.Text(ANSWER))
    # Audio time on the socket: ~0.3 s of greeting, then speech from ~0.6 s to ~2.3 s.
    fakes.deepgram.close_after_audio_s = 1.3
    server = await start(fakes, start_server)
    async with live_call(server.url, "call-dg-1011") as (node, line):
        _, latency = await ask(node, line, fixture_pcm("question.wav"))
        await wait_until_quiet(node)
    report("deepgram 1011 mid-utterance", latency)
    first, second = list(fakes.deepgram.connections)[:2]
    assert (first.close_code, first.closed_by) == (1011, "server")
    assert second.final_transcripts == [QUESTION]
    assert node.counts["disconnect"] == 0 and ANSWER in spoken(fakes)
    await assert_cleaned_up(server, fakes)


async def test_deepgram_stall_is_a_dead_stream_reconnect_and_replay(
    fakes: FakeProviders, start_server: StartServer
) -> None:
    # The stalled socket still "hears" (and uses up) the first line; it just never says it.
    fakes.deepgram.utterances.extend([QUESTION, QUESTION])
    fakes.openai.replies.append(llm.Text(ANSWER))
    server = await start(fakes, start_server)
    question = fixture_pcm("question.wav")
    async with live_call(server.url, "call-dg-stall") as (node, line):
        fakes.deepgram.stall = True  # audio is accepted, nothing comes back
        line.say(question)
        await fakes.deepgram.wait_for_connections(2, timeout_s=10)
        fakes.deepgram.stall = False  # the new socket is healthy
        ended = await line.said()
        play = await node.wait_for("playAudio", after=ended, timeout=10)
        await wait_until_quiet(node)
    latency = play.t - ended
    report("deepgram stall", latency)
    first, second = list(fakes.deepgram.connections)[:2]
    assert first.closed_by == "client" and first.final_transcripts == []
    # The speech the stalled socket swallowed was replayed: the new socket got it from
    # the first loud 20 ms frame on, not just what was said after the reconnect.
    onset = next(i for i in range(0, len(question), 640) if is_speech(question[i : i + 640]))
    first_words = question[onset : onset + 6400]
    assert first_words in first.audio and first_words in second.audio
    assert second.final_transcripts == [QUESTION]
    assert fakes.openai.requests[0].messages[-1]["content"] == QUESTION
    assert node.counts["disconnect"] == 0
    await assert_cleaned_up(server, fakes)


async def test_deepgram_down_for_good_caller_hears_apology_then_disconnect(
    fakes: FakeProviders, start_server: StartServer
) -> None:
    fakes.deepgram.refuse_status = 503  # retryable, but it never comes back
    server = await start(fakes, start_server, deepgram_max_outage_s=1.0)
    async with StreamNodeClient(sample_rate=16000) as node:
        await node.connect(server.url)
        sent_at = await node.send_metadata({"callid": "call-dg-503"})
        async with CallerLine(node, 16000):
            gone = await node.wait_for("disconnect", timeout=10)
    greeting_ms = cached_ms(server, "Hello.")
    apology = [e for e in node.events if e.kind == "playAudio" and e.t > sent_at + 0.5]
    report("deepgram 503 forever (apology after call start)", apology[0].t - sent_at)
    assert audio_ms_after(node, sent_at) >= greeting_ms + cached_ms(
        server, server.state.agent.unavailable_line
    )
    assert all(e.t < gone.t for e in apology)
    assert len(fakes.deepgram.rejections) > 1  # it was retried before giving up
    await assert_cleaned_up(server, fakes)


async def test_deepgram_down_for_good_with_a_transfer_number_hands_the_caller_on(
    fakes: FakeProviders, start_server: StartServer
) -> None:
    fakes.deepgram.refuse_status = 503
    server = await start(
        fakes, start_server, deepgram_max_outage_s=1.0, transfer_number="+911234567890"
    )
    async with StreamNodeClient(sample_rate=16000) as node:
        await node.connect(server.url)
        sent_at = await node.send_metadata({"callid": "call-dg-503-transfer"})
        async with CallerLine(node, 16000):
            moved = await node.wait_for("transfer", timeout=10)
    assert moved.destination == "+911234567890"
    assert audio_ms_after(node, sent_at) >= cached_ms(server, "Hello.") + cached_ms(
        server, server.state.agent.transfer_line
    )
    assert all(e.t < moved.t for e in node.events if e.kind == "playAudio")
    assert node.counts["disconnect"] == 0
    await assert_cleaned_up(server, fakes)


async def test_deepgram_stalled_on_every_socket_ends_with_apology(
    fakes: FakeProviders, start_server: StartServer
) -> None:
    server = await start(fakes, start_server, deepgram_max_outage_s=1.0)
    async with live_call(server.url, "call-dg-stuck") as (node, line):
        fakes.deepgram.stall = True  # and it stays stalled
        ended, latency = await ask(node, line, fixture_pcm("question.wav"))
        gone = await node.wait_for("disconnect", timeout=10)
    report("deepgram stalled for good (apology)", latency)
    assert audio_ms_after(node, ended) >= cached_ms(server, server.state.agent.unavailable_line)
    assert all(e.t < gone.t for e in node.events if e.kind == "playAudio")
    assert len(fakes.deepgram.connections) >= 2 and not fakes.openai.requests
    await assert_cleaned_up(server, fakes)


# --- OpenAI ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(llm.HttpError(429), id="429"),
        pytest.param(llm.HttpError(500), id="500"),
        pytest.param(llm.Stall(), id="stall-before-first-token"),
        pytest.param(llm.MidStreamError(text_before="We open"), id="error-event-mid-stream"),
    ],
)
async def test_openai_fault_is_retried_within_the_turn(
    fault: llm.Reply, fakes: FakeProviders, start_server: StartServer
) -> None:
    fakes.deepgram.utterances.append(QUESTION)
    fakes.openai.replies.extend([fault, llm.Text(ANSWER)])
    server = await start(fakes, start_server)
    async with live_call(server.url, "call-openai") as (node, line):
        _, latency = await ask(node, line, fixture_pcm("stop.wav"))
        await wait_until_quiet(node)
    report(f"openai {type(fault).__name__}", latency)
    failed, retried = list(fakes.openai.requests)[:2]
    assert retried.messages == failed.messages
    assert ANSWER in spoken(fakes)  # the real answer, not the fallback line
    if isinstance(fault, llm.Stall):
        assert failed.disconnected  # we hung up on the stalled stream
    if isinstance(fault, llm.HttpError) and fault.status == 429:
        # The fake's 429 says `retry-after: 1`; the retry waited for it.
        assert retried.received_at - failed.received_at >= 1.0
    assert node.counts["disconnect"] == 0
    await assert_cleaned_up(server, fakes)


async def test_openai_429_asking_for_more_than_the_turn_has_apologises_at_once(
    fakes: FakeProviders, start_server: StartServer
) -> None:
    fakes.deepgram.utterances.append(QUESTION)
    fakes.openai.replies.extend([llm.HttpError(429, retry_after_s=30), llm.Text(ANSWER)])
    server = await start(fakes, start_server)
    async with live_call(server.url, "call-openai-429-long") as (node, line):
        ended, latency = await ask(node, line, fixture_pcm("stop.wav"))
        await wait_until_quiet(node)
    report("openai 429 retry-after 30 s (fallback line)", latency)
    assert len(fakes.openai.requests) == 1  # not retried against the server's wishes
    assert audio_ms_after(node, ended) == pytest.approx(
        cached_ms(server, server.state.agent.fallback_line), abs=1
    )
    assert node.counts["disconnect"] == 0
    await assert_cleaned_up(server, fakes)


async def test_openai_failover_when_primary_stalls_before_first_token(
    fakes: FakeProviders, start_server: StartServer
) -> None:
    fakes.deepgram.utterances.append(QUESTION)
    fakes.openai.replies.append(llm.Stall())
    async with FakeOpenAI(api_key="fallback-key", replies=[llm.Text(ANSWER)]) as backup:
        server = await start(
            fakes,
            start_server,
            openai_fallback_base_url=backup.base_url,
            openai_fallback_model="backup-model",
            openai_fallback_api_key="fallback-key",
        )
        async with live_call(server.url, "call-failover") as (node, line):
            _, latency = await ask(node, line, fixture_pcm("stop.wav"))
            await wait_until_quiet(node)
        report("openai failover (primary stall)", latency)
        (primary,) = fakes.openai.requests
        (answered,) = backup.requests
        assert primary.disconnected and answered.completed
        assert answered.model == "backup-model" and answered.messages == primary.messages
        assert ANSWER in spoken(fakes)
        await assert_cleaned_up(server, fakes)
        assert backup.requests[0].ended_at is not None


# --- Cartesia ----------------------------------------------------------------------------

# Over the WebSocket (the default) and over SSE, which stays selectable.
TRANSPORTS = [pytest.param("websocket", id="ws"), pytest.param("sse", id="sse")]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(tts.HttpError(500), id="500"),
        pytest.param(tts.ErrorEvent(after_chunks=0), id="error-event"),
    ],
)
async def test_cartesia_fault_before_audio_is_retried(
    fault: tts.Fault, transport: str, fakes: FakeProviders, start_server: StartServer
) -> None:
    fakes.deepgram.utterances.append(QUESTION)
    fakes.openai.replies.extend([llm.Text(ANSWER), llm.Text(ANSWER)])
    server = await start(fakes, start_server, cartesia_transport=transport)
    fakes.cartesia.faults.append(fault)
    async with live_call(server.url, "call-cartesia") as (node, line):
        _, latency = await ask(node, line, fixture_pcm("stop.wav"))
        await wait_until_quiet(node)
    report(f"cartesia {type(fault).__name__} ({transport})", latency)
    failed, retried = [r for r in fakes.cartesia.requests if r.text == ANSWER][:2]
    assert failed.fault == fault and retried.completed
    assert {r.transport for r in fakes.cartesia.requests} == {transport}
    assert node.counts["disconnect"] == 0
    await assert_cleaned_up(server, fakes)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_cartesia_stall_mid_stream_then_fallback_line(
    transport: str, fakes: FakeProviders, start_server: StartServer
) -> None:
    fakes.deepgram.utterances.append(QUESTION)
    fakes.openai.replies.append(llm.Text(ANSWER))
    server = await start(fakes, start_server, cartesia_transport=transport)
    # 171 ms of audio, then silence: one 100 ms chunk reaches the caller before the stall.
    fakes.cartesia.faults.append(tts.Stall(after_chunks=3))
    async with live_call(server.url, "call-tts-stall") as (node, line):
        ended, latency = await ask(node, line, fixture_pcm("stop.wav"))
        (stalled,) = [r for r in fakes.cartesia.requests if r.text == ANSWER]
        fallback_ms = cached_ms(server, server.state.agent.fallback_line)
        # A fragment of the reply, the idle-gap timeout, then the whole fallback line.
        await eventually(lambda: audio_ms_after(node, ended) > fallback_ms)
        await wait_until_quiet(node)
    report(f"cartesia stall mid-stream ({transport})", latency)
    await fakes.cartesia.wait_until(lambda: stalled.ended_at)
    assert stalled.disconnected  # the idle-gap timeout closed (or cancelled) it
    assert spoken(fakes).count(ANSWER) == 1  # heard: no retry
    assert node.counts["disconnect"] == 0
    await assert_cleaned_up(server, fakes)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_cartesia_outage_mid_call_plays_cached_fallback_and_call_recovers(
    transport: str, fakes: FakeProviders, start_server: StartServer
) -> None:
    fakes.deepgram.utterances.extend([QUESTION, QUESTION])
    fakes.openai.replies.extend([llm.Text(ANSWER)] * 8)
    server = await start(fakes, start_server, cartesia_transport=transport)
    fakes.cartesia.faults.extend([tts.HttpError(503)] * 50)
    async with live_call(server.url, "call-tts-down") as (node, line):
        ended, latency = await ask(node, line, fixture_pcm("stop.wav"))
        await wait_until_quiet(node)
        fallback_ms = cached_ms(server, server.state.agent.fallback_line)
        assert audio_ms_after(node, ended) == pytest.approx(fallback_ms, abs=1)
        fakes.cartesia.faults.clear()  # the provider is back
        _, recovered = await ask(node, line, fixture_pcm("stop.wav"))
        report(f"cartesia back after the outage ({transport})", recovered)
        await wait_until_quiet(node)
    report(f"cartesia outage, cached fallback ({transport})", latency)
    assert fakes.cartesia.requests[-1].completed
    assert node.counts["disconnect"] == 0
    await assert_cleaned_up(server, fakes)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_uncached_fallback_with_tts_down_ends_the_call_instead_of_silence(
    transport: str, fakes: FakeProviders, start_server: StartServer
) -> None:
    fakes.deepgram.utterances.append(QUESTION)
    server = await start(fakes, start_server, cartesia_transport=transport)
    async with live_call(server.url, "call-no-cache") as (node, line):
        server.state.providers.cache.clear()  # e.g. the warm-up failed at start-up
        fakes.cartesia.faults.extend([tts.HttpError(500)] * 50)
        line.say(fixture_pcm("stop.wav"))
        ended = await line.said()
        gone = await node.wait_for("disconnect", timeout=10)
    report(f"uncached fallback + TTS down, disconnect ({transport})", gone.t - ended)
    assert audio_ms_after(node, ended) == 0
    await assert_cleaned_up(server, fakes)


# --- consecutive failures ----------------------------------------------------------------


async def test_consecutive_failed_turns_end_with_goodbye_then_transfer(
    fakes: FakeProviders, start_server: StartServer
) -> None:
    fakes.deepgram.utterances.extend([QUESTION, QUESTION])
    fakes.openai.replies.extend([llm.HttpError(401), llm.HttpError(401)])  # not retryable
    server = await start(fakes, start_server, max_failed_turns=2, transfer_number="+919000000001")
    async with live_call(server.url, "call-give-up") as (node, line):
        first_end, first = await ask(node, line, fixture_pcm("stop.wav"))
        report("1st failed turn (fallback)", first)
        await wait_until_quiet(node)
        second_end, second = await ask(node, line, fixture_pcm("stop.wav"))
        moved = await node.wait_for("transfer", timeout=10)
    report("2nd failed turn (goodbye)", second)
    agent = server.state.agent
    assert audio_ms_after(node, first_end) - audio_ms_after(node, second_end) == pytest.approx(
        cached_ms(server, agent.fallback_line), abs=1
    )
    assert audio_ms_after(node, second_end) == pytest.approx(
        cached_ms(server, agent.goodbye_line), abs=1
    )
    assert moved.destination == "+919000000001"
    assert all(e.t < moved.t for e in node.events if e.kind == "playAudio")
    record = server.state.registry.get("call-give-up")
    assert record is not None and record.transferred_to == "+919000000001"
    await assert_cleaned_up(server, fakes)


# --- pure pieces, no sockets ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        *[(None, True), (400, False), (401, False), (403, False), (404, False)],
        *[(408, True), (429, True), (500, True), (502, True), (503, True), (504, True)],
    ],
)
def test_retryable_status(status: int | None, retryable: bool) -> None:
    assert retryable_status(status) is retryable


def _request() -> httpx2.Request:
    # openai 3.x is built on httpx2; its exceptions carry httpx2 requests and responses.
    return httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")


OPENAI_ERRORS: list[tuple[openai.OpenAIError, bool, int | None]] = [
    (openai.APITimeoutError(request=_request()), True, None),
    (openai.APIConnectionError(request=_request()), True, None),
    (openai.APIError("error event in stream", _request(), body=None), True, None),
    *[
        (
            openai.APIStatusError(
                "boom", response=httpx2.Response(code, request=_request()), body=None
            ),
            code in (429, 500, 503),
            code,
        )
        for code in (400, 401, 429, 500, 503)
    ],
]


@pytest.mark.parametrize(("exc", "retryable", "status"), OPENAI_ERRORS)
def test_openai_errors_map_into_the_tree(
    exc: openai.OpenAIError, retryable: bool, status: int | None
) -> None:
    mapped = map_error(exc)
    assert isinstance(mapped, ProviderError)
    assert (mapped.provider, mapped.retryable, mapped.status) == ("openai", retryable, status)


def test_retry_after_travels_with_the_mapped_error() -> None:
    response = httpx2.Response(429, headers={"retry-after": "1.5"}, request=_request())
    mapped = map_error(openai.APIStatusError("slow down", response=response, body=None))
    assert mapped.retryable and mapped.retry_after_s == 1.5
    cartesia = error_from_response(503, b"busy", httpx2.Headers({"retry-after": "4"}))
    assert cartesia.retryable and cartesia.retry_after_s == 4.0


def test_cartesia_errors_map_into_the_tree() -> None:
    assert error_from_response(500, b'{"message": "down"}').retryable
    assert error_from_response(429, b"slow down").retryable
    bad = error_from_response(400, b'{"message": "bad voice"}')
    assert (bad.retryable, bad.status, bad.message) == (False, 400, "HTTP 400: bad voice")
    assert error_event({"type": "error", "status_code": 500, "message": "x"}).retryable
    assert not error_event({"type": "error", "status_code": 400, "title": "Bad"}).retryable
    assert error_event({"type": "error"}).status == 500  # no status: a server fault


async def test_openai_first_token_and_idle_timeouts_are_chained_provider_timeouts() -> None:
    async def silent() -> AsyncGenerator[int, None]:
        await asyncio.sleep(1)
        yield 1

    for waiting_first, phase in ((True, "first_token"), (False, "idle")):
        clock = PhaseClock("openai", "first_token", 0.05, 0.05)
        if not waiting_first:
            clock.result()
        chunks = silent()
        with pytest.raises(ProviderTimeout) as caught:
            await clock.next(chunks)
        await chunks.aclose()
        assert caught.value.phase == phase and caught.value.retryable
        assert isinstance(caught.value.__cause__, TimeoutError)


def test_retry_delay_backs_off_inside_the_deadline_and_never_after_audio() -> None:
    transient = ProviderError("x", "HTTP 503", retryable=True, status=503)
    permanent = ProviderError("x", "HTTP 401", retryable=False, status=401)
    assert retry_delay(transient, 1, heard=False, now=0.0, end=2.5) == pytest.approx(0.1)
    assert retry_delay(transient, 2, heard=False, now=0.0, end=2.5) == pytest.approx(0.2)
    assert retry_delay(transient, 3, heard=False, now=0.0, end=2.5) == pytest.approx(0.4)
    assert retry_delay(transient, 1, heard=True, now=0.0, end=2.5) is None
    assert retry_delay(permanent, 1, heard=False, now=0.0, end=2.5) is None
    # 0.4 s of backoff plus a minimal attempt no longer fits in what is left.
    assert retry_delay(transient, 3, heard=False, now=2.0, end=2.5) is None


def test_retry_delay_waits_as_long_as_the_server_asked_if_that_fits() -> None:
    def limited(after: float) -> ProviderError:
        return ProviderError("x", "HTTP 429", retryable=True, status=429, retry_after_s=after)

    assert retry_delay(limited(0.05), 1, heard=False, now=0.0, end=2.5) == pytest.approx(0.1)
    assert retry_delay(limited(1.0), 1, heard=False, now=0.0, end=2.5) == pytest.approx(1.0)
    assert retry_delay(limited(2.5), 1, heard=False, now=0.0, end=2.5) is None


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "750", "retry-after": "9"}, 0.75),  # OpenAI's, preferred
        ({"retry-after-ms": "soon", "retry-after": "3"}, 3.0),
        ({"retry-after": "Wed, 25 Nov 2026 10:00:05 GMT"}, 5.0),
        ({"retry-after": "Wed, 25 Nov 2026 09:59:00 GMT"}, 0.0),  # already past
        ({"retry-after": "-4"}, 0.0),
        ({"retry-after": "inf"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "later"}, None),
        ({}, None),
    ],
)
def test_retry_after_headers_parse_to_seconds(
    headers: dict[str, str], expected: float | None
) -> None:
    now = datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC)
    assert retry_after_s(httpx2.Headers(headers), now=now) == expected


def test_stall_check_arms_only_after_enough_unanswered_speech() -> None:
    loud = (b"\x00\x20" * 320)[:640]  # 20 ms at 16 kHz, RMS 8192
    quiet = bytes(640)
    assert is_speech(loud) and not is_speech(quiet)
    unanswered = _Unanswered(max_bytes=32000 * 10, arm_bytes=16000)  # 10 s kept, 0.5 s arms
    unanswered.sent(quiet, now=0.0)
    assert unanswered.since is None and not unanswered.frames
    for i in range(24):  # 0.48 s of speech: not yet armed
        unanswered.sent(loud, now=1.0 + i * 0.02)
    assert unanswered.stalled_at(2.0) is None
    unanswered.sent(loud, now=1.5)
    assert unanswered.stalled_at(2.0) == pytest.approx(3.0)
    unanswered.answered()  # any message from Deepgram disarms it
    assert unanswered.stalled_at(2.0) is None and not unanswered.frames
    small = _Unanswered(max_bytes=1280, arm_bytes=640)
    for i in range(5):
        small.sent(bytes([i]) * 640 if i else loud, now=float(i))
    # Bounded: only the newest frames are kept for a replay; the stall clock keeps its start.
    assert list(small.frames) == [bytes([3]) * 640, bytes([4]) * 640] and small.since == 0.0


async def _collect(stream: AsyncIterator[LLMEvent]) -> str:
    return "".join(e.text for e in [event async for event in stream] if isinstance(e, TextDelta))


async def test_failover_only_before_the_first_token_then_skips_primary_for_a_while() -> None:
    down = ProviderError("primary", "HTTP 500", retryable=True, status=500)
    primary = ScriptedLLM([down, ("spoken", down)], name="primary")
    backup = ScriptedLLM(["from backup", "again backup"], name="backup")
    model = FailoverLLM(primary, backup, cooldown_s=60.0)
    assert await _collect(model.stream([], [])) == "from backup"
    # Within the cool-down the primary is not asked at all.
    assert await _collect(model.stream([], [])) == "again backup"
    assert primary.calls == 1
    # After it: a failure once the primary has spoken is the primary's; no failover.
    model.primary_down_until = 0.0
    with pytest.raises(ProviderError) as caught:
        await _collect(model.stream([], []))
    assert caught.value is down and backup.calls == 2


async def test_failed_turn_count_resets_on_success_and_ends_the_call_at_the_limit() -> None:
    refused = ProviderError("memory", "HTTP 401", retryable=False, status=401)
    stt, speech = ScriptedSTT(), ToneTTS()
    model = ScriptedLLM([refused, "Fine.", refused, refused])
    config = AgentConfig(greeting="Hi.", system_prompt="", max_failed_turns=2)
    line = MemoryLine()
    session = CallSession(
        record=CallRecord("call-count"),
        config=config,
        # No cache: every line is synthesised, so the TTS sees the whole conversation.
        providers=Providers(stt=stt, llm=model, tts=speech, cache=SpeechCache(max_entries=0)),
        line=line,
    )
    call = asyncio.create_task(session.run())
    expected = ["Hi.", config.fallback_line, "Fine.", config.fallback_line, config.goodbye_line]
    for turn in range(1, 5):

        def ready(lines: int = turn) -> bool:  # the greeting, then one line per turn so far
            return len(speech.texts) >= lines and not session.bot_busy()

        await eventually(ready)
        await stt.queue.put(STTEvent(STTEventKind.FINAL, f"words {turn}", speech_final=True))
    await eventually(lambda: "hang_up" in line.kinds())
    assert speech.texts == expected
    assert line.kinds()[-1] == "hang_up" and session.end_reason == "2 failed turns in a row"
    line.caller_hangs_up()
    await call
    assert not session_tasks()


async def test_stt_ending_while_the_call_is_being_handed_on_adds_no_second_hand_off() -> None:
    refused = ProviderError("memory", "HTTP 401", retryable=False, status=401)
    stt, speech = ScriptedSTT(), ToneTTS()
    config = AgentConfig(
        greeting="Hi.", system_prompt="", max_failed_turns=1, transfer_number="+919000000002"
    )
    line = MemoryLine()
    session = CallSession(
        record=CallRecord("call-one-hand-off"),
        config=config,
        providers=Providers(stt=stt, llm=ScriptedLLM([refused]), tts=speech, cache=SpeechCache()),
        line=line,
    )
    call = asyncio.create_task(session.run())
    await eventually(lambda: speech.texts == ["Hi."] and not session.bot_busy())
    await stt.queue.put(STTEvent(STTEventKind.FINAL, "help", speech_final=True))
    await eventually(lambda: "transfer" in line.kinds())
    stt.queue.put_nowait(None)  # and now speech recognition dies too
    await asyncio.sleep(0.3)
    line.caller_hangs_up()
    await call
    transfers = [a.number for a in line.actions if a.kind == "transfer"]
    assert transfers == ["+919000000002"]
    assert config.transfer_line not in speech.texts  # no second hand-off line
    assert not session_tasks()
