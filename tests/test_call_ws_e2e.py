"""Whole calls over Cartesia's WebSocket (the default transport): one context per reply,
over real sockets; the socket's faults are in tests/test_faults.py."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from streamnode.client import ReceivedEvent, StreamNodeClient
from testkit import ChatRequest, FakeProviders, llm
from testkit.cartesia_script import HttpError
from tests.caller import CallerLine, fixture_pcm, live_call, session_tasks, wait_until_quiet
from tests.conftest import StartServer, VoiceServer
from tests.test_call_e2e import LONG_REPLY

Asked = tuple[StreamNodeClient, CallerLine, ChatRequest, ReceivedEvent]


@contextlib.asynccontextmanager
async def asked(server: VoiceServer, fakes: FakeProviders, call_id: str) -> AsyncIterator[Asked]:
    """A call that has heard its greeting and asked its question; yields at the reply."""
    async with live_call(server.url, call_id) as (node, line):
        line.say(fixture_pcm("question.wav"))
        request = (await fakes.openai.wait_for_requests(1, timeout_s=10))[0]
        reply = await node.wait_for("playAudio", after=request.received_at, timeout=10)
        yield node, line, request, reply


async def test_reply_streams_through_one_context_per_turn(
    fakes: FakeProviders, start_server: StartServer
) -> None:
    server = await start_server(greeting="Hello.")
    fakes.deepgram.utterances.append("What time do you open tomorrow?")
    text = "We open at nine tomorrow. We close at six in the evening. Anything else?"
    fakes.openai.replies.append(llm.Text(text, per_token_ms=60))
    async with asked(server, fakes, "call-ws-1") as (node, _, request, reply):
        await fakes.openai.wait_until(lambda: request.ended_at, timeout_s=10)
        assert request.ended_at is not None and reply.t < request.ended_at
        await wait_until_quiet(node)

    assert node.problems == []
    inputs = [r for r in fakes.cartesia.requests if r.received_at > request.received_at]
    assert [r.transcript for r in inputs] == [
        "We open at nine tomorrow. ",
        "We close at six in the evening. ",
        "Anything else? ",
    ]
    assert len({r.context_id for r in inputs}) == 1 and all(r.completed for r in inputs)
    assert all(r.transport == "websocket" for r in fakes.cartesia.requests)
    assert fakes.cartesia.sockets_opened == 1  # greeting, fixed lines and the reply
    plays = [e for e in node.events if e.kind == "playAudio" and e.t >= reply.t]
    sizes = [len(e.wav.pcm) for e in plays if e.wav is not None]
    assert len(sizes) == len(plays) and sizes[0] <= 6400  # the first: PLAYOUT_START_MS
    assert all(size <= 3200 for size in sizes[1:])  # then 100 ms pieces, just in time
    record = server.state.registry.get("call-ws-1")
    assert record is not None and len(record.turn_latencies_ms) == 1


async def test_barge_in_cancels_the_context_and_keeps_the_words_heard(
    fakes: FakeProviders, start_server: StartServer
) -> None:
    server = await start_server(greeting="Hello.")
    fakes.cartesia.realtime_factor = 1.0  # the reply is still being voiced when cut off
    fakes.deepgram.utterances.extend(["When are you open?", "Wait, stop."])
    fakes.openai.replies.extend([llm.Text(LONG_REPLY, per_token_ms=5), llm.Text("Sure.")])
    async with asked(server, fakes, "call-ws-barge") as (node, line, first, reply):
        await asyncio.sleep(max(0.0, reply.t + 1.5 - time.monotonic()))
        line.say(fixture_pcm("stop.wav"))
        kill = await node.wait_for("killAudio", timeout=5)
        second = (await fakes.openai.wait_for_requests(2, timeout_s=10))[1]
        await node.wait_for("playAudio", after=second.received_at, timeout=5)
        await wait_until_quiet(node)

    assert node.counts["killAudio"] == 1
    after_kill = [e for e in node.events if e.kind == "playAudio" and e.t > kill.t]
    assert after_kill and all(e.t > second.received_at for e in after_kill)
    cut = {r.context_id for r in fakes.cartesia.requests if r.received_at > first.received_at}
    assert set(fakes.cartesia.cancels) & cut  # the interrupted reply's context was cancelled
    heard = [m for m in second.messages if m["role"] == "assistant"][-1]["content"]
    heard_words, full_words = heard.split(), LONG_REPLY.split()
    assert 0 < len(heard_words) < len(full_words)
    assert full_words[: len(heard_words)] == heard_words
    record = server.state.registry.get("call-ws-barge")
    assert record is not None and record.barge_ins == 1


async def test_a_context_that_fails_before_audio_is_retried(
    fakes: FakeProviders, start_server: StartServer
) -> None:
    server = await start_server(greeting="Hello.")
    fakes.deepgram.utterances.append("When are you open?")
    fakes.openai.replies.extend([llm.Text("We open at nine."), llm.Text("We open at nine.")])
    warming = [t for t in server.state.background if t.get_name() == "warm-cache"]
    if warming:
        await asyncio.wait(warming)  # every fixed line is cached: no context but the reply's
    fakes.cartesia.faults.append(HttpError(503, "overloaded"))
    async with asked(server, fakes, "call-ws-retry") as (node, _, request, _):
        await wait_until_quiet(node)

    replies = [r for r in fakes.cartesia.requests if r.received_at > request.received_at]
    assert len({r.context_id for r in replies}) == 2  # the failed context, then the retry
    assert replies[-1].completed
    record = server.state.registry.get("call-ws-retry")
    assert record is not None and len(record.turn_latencies_ms) == 1


async def test_hang_up_mid_reply_cancels_the_context_and_leaves_nothing(
    fakes: FakeProviders, start_server: StartServer
) -> None:
    server = await start_server(greeting="Hello.")
    fakes.cartesia.realtime_factor = 1.0
    fakes.deepgram.utterances.append("When are you open?")
    fakes.openai.replies.append(llm.Text(LONG_REPLY, per_token_ms=60))
    async with asked(server, fakes, "call-ws-hangup") as (node, line, _, _):
        await line.hang_up()
        await node.close()

    async with asyncio.timeout(5):
        while server.state.registry.active() or session_tasks():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    await fakes.cartesia.wait_until(lambda: fakes.cartesia.cancels, timeout_s=5)
    assert fakes.cartesia.sockets  # the socket itself stays open for the next call


async def test_shutdown_closes_the_socket_and_leaves_no_task(
    fakes: FakeProviders, start_server: StartServer
) -> None:
    server = await start_server(greeting="Hello.")
    fakes.deepgram.utterances.append("When are you open?")
    fakes.openai.replies.append(llm.Text("We open at nine."))
    async with asked(server, fakes, "call-ws-shutdown") as (node, _, _, _):
        await wait_until_quiet(node)
    await server.stop()
    await fakes.cartesia.wait_until(lambda: not fakes.cartesia.sockets)
    assert fakes.cartesia.sockets_opened == 1
    assert fakes.cartesia.socket_closes == [1000]  # closed by us, with a closing handshake
    left = {t.get_name() for t in asyncio.all_tasks()} & {
        "cartesia-ws-reader",
        "cartesia-ws-reopen",
    }
    assert not left
