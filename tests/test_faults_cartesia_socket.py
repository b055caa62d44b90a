"""The Cartesia socket's own faults (the default WebSocket transport), end to end.

One socket per process carries every call's replies, so its faults are the process's:
refused when it is (re)opened, closed under a reply, dropped while idle. The product rule
is the one of tests/test_faults.py (whose helpers these tests use): the caller hears
speech, the call stays up and recovers, nothing of the call is left behind.
"""

from __future__ import annotations

import pytest

from server.providers import tts_status
from streamnode.client import StreamNodeClient
from testkit import FakeProviders, llm, tts
from tests.caller import CallerLine, eventually, fixture_pcm, live_call, wait_until_quiet
from tests.conftest import StartServer, VoiceServer
from tests.test_faults import (
    ANSWER,
    QUESTION,
    ask,
    assert_cleaned_up,
    audio_ms_after,
    cached_ms,
    report,
    spoken,
    start,
)


def two_questions(fakes: FakeProviders) -> None:
    fakes.deepgram.utterances.extend([QUESTION, QUESTION])
    fakes.openai.replies.extend([llm.Text(ANSWER)] * 2)


async def answered_again(node: StreamNodeClient, line: CallerLine) -> None:
    """The caller asks again and hears a reply; the call is up."""
    asked_at, _ = await ask(node, line, fixture_pcm("stop.wav"))
    await wait_until_quiet(node)
    assert audio_ms_after(node, asked_at) > 0 and node.counts["disconnect"] == 0


def sockets_open(server: VoiceServer) -> int:
    status = tts_status(server.state.providers.tts)
    assert status is not None and status["transport"] == "websocket"
    open_now: int = status["open_sockets"]
    return open_now


@pytest.mark.parametrize(("status", "retried"), [(401, False), (503, True)])
async def test_cartesia_socket_refused_caller_hears_the_apology_and_the_call_recovers(
    status: int, retried: bool, fakes: FakeProviders, start_server: StartServer
) -> None:
    fakes.deepgram.utterances.extend([QUESTION, QUESTION])
    fakes.openai.replies.extend([llm.Text(ANSWER)] * 8)
    server = await start(fakes, start_server, warm_interval_s=300)  # no warm-up meanwhile
    fakes.cartesia.refuse_status = status  # a revoked key (401) or an outage (503)
    async with live_call(server.url, "call-tts-refused") as (node, line):
        await fakes.cartesia.drop_sockets()  # and the socket has to be opened again
        await fakes.cartesia.wait_until(lambda: fakes.cartesia.socket_refusals)
        ended, latency = await ask(node, line, fixture_pcm("stop.wav"))
        await wait_until_quiet(node)
        fallback_ms = cached_ms(server, server.state.agent.fallback_line)
        assert audio_ms_after(node, ended) == pytest.approx(fallback_ms, abs=1)
        refusals = len(fakes.cartesia.socket_refusals)
        fakes.cartesia.refuse_status = None  # the key is fixed, the outage over
        _, recovered = await ask(node, line, fixture_pcm("stop.wav"))
        report(f"cartesia socket back after {status}", recovered)
        await wait_until_quiet(node)
    report(f"cartesia socket refused {status} (cached fallback)", latency)
    if not retried:  # the reopening gave up at once, and the turn tried once
        assert refusals == 2
    assert set(fakes.cartesia.socket_refusals) == {status}
    assert spoken(fakes)[-1] == ANSWER and fakes.cartesia.requests[-1].completed
    assert node.counts["disconnect"] == 0
    await assert_cleaned_up(server, fakes)


async def test_cartesia_socket_closed_before_audio_the_turn_retries_on_a_new_socket(
    fakes: FakeProviders, start_server: StartServer
) -> None:
    fakes.deepgram.utterances.append(QUESTION)
    fakes.openai.replies.extend([llm.Text(ANSWER), llm.Text(ANSWER)])
    server = await start(fakes, start_server)
    fakes.cartesia.faults.append(tts.Stall(after_chunks=0))  # no audio until the drop
    async with live_call(server.url, "call-tts-dropped") as (node, line):
        line.say(fixture_pcm("stop.wav"))
        ended = await line.said()
        await fakes.cartesia.wait_until(lambda: ANSWER in spoken(fakes))
        assert await fakes.cartesia.drop_sockets() == 1
        play = await node.wait_for("playAudio", after=ended, timeout=10)
        await wait_until_quiet(node)
    report("cartesia socket closed before audio (retried)", play.t - ended)
    dropped, retried = [r for r in fakes.cartesia.requests if r.text == ANSWER]
    assert dropped.disconnected and retried.completed
    assert dropped.context_id != retried.context_id
    assert fakes.cartesia.sockets_opened == 2  # the reopening and the retry shared one
    assert audio_ms_after(node, ended) < cached_ms(server, server.state.agent.fallback_line)
    assert node.counts["disconnect"] == 0
    await assert_cleaned_up(server, fakes)


async def test_cartesia_socket_closed_mid_reply_fallback_then_the_next_turn_is_answered(
    fakes: FakeProviders, start_server: StartServer
) -> None:
    two_questions(fakes)
    server = await start(fakes, start_server)
    fakes.cartesia.faults.append(tts.Stall(after_chunks=3))  # some audio, then none
    async with live_call(server.url, "call-tts-cut") as (node, line):
        ended, latency = await ask(node, line, fixture_pcm("stop.wav"))
        (cut,) = [r for r in fakes.cartesia.requests if r.text == ANSWER]
        await fakes.cartesia.wait_until(lambda: cut.chunks_sent >= 3)
        await fakes.cartesia.drop_sockets()
        fallback_ms = cached_ms(server, server.state.agent.fallback_line)
        await eventually(lambda: audio_ms_after(node, ended) > fallback_ms)
        await wait_until_quiet(node)
        await eventually(lambda: sockets_open(server) == 1)  # reopened with no turn asking
        await answered_again(node, line)
    report("cartesia socket closed mid-reply (fallback)", latency)
    assert spoken(fakes).count(ANSWER) == 2  # heard: no retry; the next turn's answer
    assert fakes.cartesia.requests[-1].completed and fakes.cartesia.sockets_opened == 2
    await assert_cleaned_up(server, fakes)


async def test_cartesia_socket_dropped_while_idle_is_reopened_before_the_next_turn(
    fakes: FakeProviders, start_server: StartServer
) -> None:
    two_questions(fakes)
    server = await start(fakes, start_server, warm_interval_s=300)  # the reopening, not it
    async with live_call(server.url, "call-tts-idle") as (node, line):
        await answered_again(node, line)
        assert await fakes.cartesia.drop_sockets() == 1  # e.g. Cartesia's 5-minute idle close
        await eventually(lambda: fakes.cartesia.sockets_opened == 2 and sockets_open(server))
        await answered_again(node, line)
    answers = [r for r in fakes.cartesia.requests if r.text == ANSWER]
    assert len(answers) == 2 and all(r.completed for r in answers)  # no failed attempt
    assert fakes.cartesia.sockets_opened == 2  # the turn opened none of its own
    await assert_cleaned_up(server, fakes)
