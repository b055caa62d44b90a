"""End-to-end calls: the Stream Node simulator -> our server -> the provider fakes.

Every hop is a real socket and every client is the real SDK. Audio is paced in real
time where timing matters, so these tests are few and each proves a whole behaviour.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from pipeline.events import (
    AgentSpeech,
    BargeIn,
    CallEnded,
    CallerSpeech,
    CallStarted,
    TurnTimings,
)
from streamnode.client import StreamNodeClient
from testkit import FakeProviders, llm
from tests.caller import CallerLine, fixture_pcm, live_call, session_tasks, wait_until_quiet
from tests.conftest import StartServer

SEED_METADATA = json.dumps(
    "{'callid': 'call-seed-1', 'virtual_number': '+911234567890', "
    "'customer_number': '+919876543210', 'call_type': 'inbound'}"
)


@pytest.mark.parametrize("transport", ["websocket", "sse"])  # the default, and SSE kept alive
async def test_greeting_then_streamed_reply(
    transport: str, fakes: FakeProviders, start_server: StartServer
) -> None:
    server = await start_server(cartesia_transport=transport)
    fakes.deepgram.utterances.append("What time do you open tomorrow?")
    # Slow tokens: the first sentence must be heard long before the LLM stream ends.
    fakes.openai.replies.append(
        llm.Text("We open at nine tomorrow. We close at six in the evening.", per_token_ms=80)
    )
    async with StreamNodeClient(sample_rate=16000) as node:
        await node.connect(server.url)
        sent_at = await node.send_metadata(SEED_METADATA)
        greeting = await node.wait_for("playAudio", timeout=5)
        assert greeting.t > sent_at
        async with CallerLine(node, 16000) as line:
            await wait_until_quiet(node)
            line.say(fixture_pcm("question.wav"))
            reply_request = (await fakes.openai.wait_for_requests(1, timeout_s=10))[0]
            reply = await node.wait_for("playAudio", after=reply_request.received_at, timeout=5)
            await fakes.openai.wait_until(lambda: reply_request.ended_at, timeout_s=10)
            assert reply_request.ended_at is not None
            assert reply.t < reply_request.ended_at, (
                "reply audio must start before the LLM finished"
            )
            await wait_until_quiet(node)

    assert node.problems == []
    assert node.events[0].kind == "playAudio"
    plays = [e for e in node.events if e.kind == "playAudio"]
    for event in plays:
        assert event.wav is not None
        assert (event.wav.channels, event.wav.sample_width, event.wav.sample_rate) == (1, 2, 16000)
        assert len(event.wav.pcm) <= 6400
    # 100 ms pieces; the first to an idle line carries PLAYOUT_START_MS (200 ms) to ride
    # out jitter, and only the last piece of each line may be shorter.
    sizes = [len(e.wav.pcm) for e in plays if e.wav is not None]
    assert sizes.count(6400) <= 2  # the greeting's and the reply's first frames
    assert sum(size in (3200, 6400) for size in sizes) >= len(sizes) - 4
    body = reply_request.body
    assert body["model"] == "gpt-4o-mini" and body["stream"] is True
    assert "tools" not in body  # no TRANSFER_NUMBER, no transfer tool
    assert reply_request.messages[-1] == {
        "role": "user",
        "content": "What time do you open tomorrow?",
    }
    assert {r.transport for r in fakes.cartesia.requests} == {transport}
    record = server.state.registry.get("call-seed-1")
    assert record is not None and record.customer_number == "+919876543210"
    assert record.turns == 1 and len(record.turn_latencies_ms) == 1

    # The same call as the vendor-free event feed tells it (playground, records, metrics).
    hub = server.state.events
    deadline = time.monotonic() + 5
    while not any(e.kind == "call_ended" for e in hub.history("call-seed-1")):
        assert time.monotonic() < deadline, "no CallEnded event"
        await asyncio.sleep(0.02)
    events = hub.history("call-seed-1")
    started = events[0]
    assert isinstance(started, CallStarted) and started.sample_rate == 16000
    assert started.providers == {"stt": "deepgram", "llm": "openai", "tts": "cartesia"}
    finals = [e for e in events if isinstance(e, CallerSpeech) and e.phase == "final"]
    assert [e.text for e in finals] == ["What time do you open tomorrow?"]
    (timings,) = [e for e in events if isinstance(e, TurnTimings)]
    assert timings.turn == 1 and timings.outcome == "answered"
    assert timings.stt_final_ms is not None and timings.llm_first_token_ms is not None
    # The local VAD heard where the question stopped, before the STT's endpointing did.
    assert timings.end_of_speech_ms is not None
    assert 0 < timings.end_of_speech_ms < timings.stt_final_ms
    assert timings.tts_first_audio_ms is not None and timings.first_audio_sent_ms is not None
    assert (
        timings.stt_final_ms
        <= timings.llm_first_token_ms
        <= timings.tts_first_audio_ms
        <= timings.first_audio_sent_ms
    )
    spoken = [e for e in events if isinstance(e, AgentSpeech)]
    assert [e.turn for e in spoken] == [0, 1]  # the greeting, then the reply
    assert (
        spoken[1].text
        == spoken[1].heard
        == ("We open at nine tomorrow. We close at six in the evening.")
    )
    ended = events[-1]
    assert isinstance(ended, CallEnded) and ended.reason == "caller_hangup"
    assert ended.turns == 1 and ended.barge_ins == 0


LONG_REPLY = (
    "Our branch opens at nine in the morning and closes at six in the evening. "
    "On Saturdays we open at ten and close at two in the afternoon. "
    "On Sundays and public holidays the branch stays closed all day long."
)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(SEED_METADATA, id="json-string-wrapping-python-dict"),
        pytest.param(
            json.dumps({"callid": "call-form-2", "virtual_number": "+911", "call_type": "inbound"}),
            id="json-object",
        ),
        pytest.param(
            "{\n'callid': 'call-form-3',\n'virtual_number': '+911',\n'call_type': 'inbound'\n}",
            id="python-dict-literal",
        ),
        pytest.param("\ufeff" + json.dumps({"callid": "call-form-4"}), id="bom"),
    ],
)
async def test_metadata_forms_and_greeting_first(raw: str, start_server: StartServer) -> None:
    server = await start_server(greeting="Hello.")
    async with StreamNodeClient(sample_rate=16000) as node:
        await node.connect(server.url)
        await node.send_metadata(raw)
        await node.wait_for("playAudio", timeout=5)
    expected = {"call-seed-1", "call-form-2", "call-form-3", "call-form-4"}
    ids = {record.call_id for record in server.state.registry.recent()}
    assert len(ids & expected) == 1
    assert node.events[0].kind == "playAudio"


async def test_unparseable_metadata_still_gets_a_greeting(start_server: StartServer) -> None:
    server = await start_server(greeting="Hello.")
    async with StreamNodeClient(sample_rate=16000) as node:
        await node.connect(server.url)
        await node.send_metadata("this is not metadata {")
        await node.wait_for("playAudio", timeout=5)
    (record,) = server.state.registry.recent()
    assert record.call_id.startswith("gen-")


async def test_8khz_call_sends_100ms_wavs_at_8khz(
    fakes: FakeProviders, start_server: StartServer
) -> None:
    server = await start_server(greeting="Hello.")
    fakes.deepgram.utterances.append("What time do you open tomorrow?")
    fakes.openai.replies.append(llm.Text("We open at nine."))
    async with StreamNodeClient(sample_rate=8000) as node:
        await node.connect(server.url + "?sample_rate=8000")
        await node.send_metadata({"callid": "call-8k"})
        async with CallerLine(node, 8000) as line:
            await node.wait_for("playAudio", timeout=5)
            await wait_until_quiet(node)
            line.say(fixture_pcm("question_8k.wav"))
            request = (await fakes.openai.wait_for_requests(1, timeout_s=10))[0]
            await node.wait_for("playAudio", after=request.received_at, timeout=5)
            await wait_until_quiet(node)
    assert node.problems == []
    sizes = [len(e.wav.pcm) for e in node.events if e.kind == "playAudio" and e.wav is not None]
    assert all(e.wav is not None and e.wav.sample_rate == 8000 for e in node.events if e.wav)
    assert max(sizes) == 3200  # a line's first frame: PLAYOUT_START_MS, 200 ms at 8 kHz
    assert sizes.count(3200) <= 2  # one per line (greeting, reply), the rest 100 ms
    assert sum(size in (1600, 3200) for size in sizes) >= len(sizes) - 2  # but the last
    (connection,) = fakes.deepgram.connections
    assert connection.query["sample_rate"] == "8000"
    assert connection.query["encoding"] == "linear16"
    rates = {req.body["output_format"]["sample_rate"] for req in fakes.cartesia.requests}
    assert rates >= {8000}


async def test_barge_in_kills_audio_cancels_turn_and_truncates_history(
    fakes: FakeProviders, start_server: StartServer
) -> None:
    server = await start_server(greeting="Hello.")
    fakes.deepgram.utterances.extend(["When are you open?", "Wait, stop."])
    fakes.openai.replies.extend([llm.Text(LONG_REPLY, per_token_ms=5), llm.Text("Sure.")])
    async with live_call(server.url, "call-barge") as (node, line):
        line.say(fixture_pcm("question.wav"))
        first = (await fakes.openai.wait_for_requests(1, timeout_s=10))[0]
        reply = await node.wait_for("playAudio", after=first.received_at, timeout=5)
        await asyncio.sleep(max(0.0, reply.t + 1.5 - time.monotonic()))
        assert node.is_playing
        line.say(fixture_pcm("stop.wav"))
        kill = await node.wait_for("killAudio", timeout=5)
        second = (await fakes.openai.wait_for_requests(2, timeout_s=10))[1]
        await node.wait_for("playAudio", after=second.received_at, timeout=5)
        await wait_until_quiet(node)

    assert node.counts["killAudio"] == 1
    # Nothing of the cancelled turn may follow the killAudio.
    after_kill = [e for e in node.events if e.kind == "playAudio" and e.t > kill.t]
    assert after_kill
    assert all(e.t > second.received_at for e in after_kill)
    # The LLM's second request carries only what the caller heard of the long reply.
    heard = [m for m in second.messages if m["role"] == "assistant"][-1]["content"]
    assert (heard and LONG_REPLY.startswith(heard.rstrip(".")) is False) or heard
    heard_words, full_words = heard.split(), LONG_REPLY.split()
    assert 0 < len(heard_words) < len(full_words)
    assert full_words[: len(heard_words)] == heard_words
    assert second.messages[-1] == {"role": "user", "content": "Wait, stop."}
    record = server.state.registry.get("call-barge")
    assert record is not None and record.barge_ins == 1
    (barge,) = [e for e in server.state.events.history("call-barge") if isinstance(e, BargeIn)]
    assert barge.turn == 1 and barge.heard_text == heard and barge.words
    interrupted = [
        e for e in server.state.events.history("call-barge") if isinstance(e, TurnTimings)
    ]
    assert interrupted[0].outcome == "interrupted"


async def test_transfer_tool_speaks_hand_off_then_transfers(
    fakes: FakeProviders, start_server: StartServer
) -> None:
    server = await start_server(greeting="Hello.", transfer_number="+919000000001")
    fakes.deepgram.utterances.extend(["Can I talk to a human please?", "Hello?"])
    fakes.openai.replies.append(llm.Tool("transfer_to_agent"))
    async with live_call(server.url, "call-transfer") as (node, line):
        line.say(fixture_pcm("transfer.wav"))
        request = (await fakes.openai.wait_for_requests(1, timeout_s=10))[0]
        handoff = await node.wait_for("playAudio", after=request.received_at, timeout=5)
        moved = await node.wait_for("transfer", timeout=10)
        # After the transfer no further turn may start.
        line.say(fixture_pcm("question.wav"))
        await line.said()
        await asyncio.sleep(0.6)

    assert moved.destination == "+919000000001"
    plays = [e for e in node.events if e.kind == "playAudio" and e.t >= handoff.t]
    assert plays and all(e.t < moved.t for e in plays)
    assert moved.t >= node.events[-1].t or node.events[-1].kind == "transfer"
    handoff_ms = sum(e.duration_ms or 0 for e in plays)
    assert handoff_ms > 1000  # the whole hand-off line, not a fragment
    tools = request.body["tools"]
    assert [t["function"]["name"] for t in tools] == ["transfer_to_agent"]
    assert len(fakes.openai.requests) == 1
    record = server.state.registry.get("call-transfer")
    assert record is not None and record.transferred_to == "+919000000001"


async def test_deepgram_drop_1011_reconnects_and_next_turn_is_answered(
    fakes: FakeProviders, start_server: StartServer
) -> None:
    server = await start_server(greeting="Hello.")
    fakes.deepgram.close_after_audio_s = 1.0  # the first connection dies with 1011
    fakes.deepgram.utterances.append("What time do you open tomorrow?")
    fakes.openai.replies.append(llm.Text("We open at nine."))
    async with StreamNodeClient(sample_rate=16000) as node:
        await node.connect(server.url)
        await node.send_metadata({"callid": "call-1011"})
        async with CallerLine(node, 16000) as line:
            await node.wait_for("playAudio", timeout=5)
            await fakes.deepgram.wait_for_connections(2, timeout_s=10)
            line.say(fixture_pcm("question.wav"))
            request = (await fakes.openai.wait_for_requests(1, timeout_s=10))[0]
            await node.wait_for("playAudio", after=request.received_at, timeout=5)
    first, second = list(fakes.deepgram.connections)[:2]
    assert first.close_code == 1011
    assert first.closed_by == "server"
    assert second.audio_bytes > 0
    assert not node.closed_by_server
    assert request.messages[-1]["content"] == "What time do you open tomorrow?"


async def test_twelve_seconds_without_audio_keeps_deepgram_alive(
    fakes: FakeProviders, start_server: StartServer
) -> None:
    server = await start_server(greeting="Hello.")
    fakes.deepgram.utterances.append("What time do you open tomorrow?")
    fakes.openai.replies.append(llm.Text("We open at nine."))
    async with StreamNodeClient(sample_rate=16000) as node:
        await node.connect(server.url)
        await node.send_metadata({"callid": "call-quiet"})
        await node.wait_for("playAudio", timeout=5)
        await asyncio.sleep(12.0)  # no audio at all: only KeepAlive can hold Deepgram open
        async with CallerLine(node, 16000) as line:
            line.say(fixture_pcm("question.wav"))
            request = (await fakes.openai.wait_for_requests(1, timeout_s=10))[0]
            await node.wait_for("playAudio", after=request.received_at, timeout=5)
    (connection,) = fakes.deepgram.connections
    assert connection.keepalives >= 2
    assert connection.close_code in (None, 1000)
    assert connection.violations == []


async def test_hang_up_mid_reply_leaves_nothing_behind(
    fakes: FakeProviders, start_server: StartServer
) -> None:
    server = await start_server(greeting="Hello.")
    fakes.deepgram.utterances.append("When are you open?")
    fakes.openai.replies.append(llm.Text(LONG_REPLY, per_token_ms=60))
    async with live_call(server.url, "call-hangup") as (node, line):
        line.say(fixture_pcm("question.wav"))
        request = (await fakes.openai.wait_for_requests(1, timeout_s=10))[0]
        await node.wait_for("playAudio", after=request.received_at, timeout=5)
        await line.hang_up()
        await node.close()

    async with asyncio.timeout(5):
        while server.state.registry.active() or session_tasks():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    await fakes.openai.wait_until(lambda: request.ended_at, timeout_s=5)
    assert request.disconnected, "the LLM stream must be closed when the caller hangs up"
    await fakes.cartesia.wait_until(
        lambda: all(r.ended_at for r in fakes.cartesia.requests) or None, timeout_s=5
    )
    (connection,) = fakes.deepgram.connections
    await connection.wait_closed(timeout_s=5)
    assert connection.closestream


async def test_silent_caller_hears_goodbye_then_disconnect(start_server: StartServer) -> None:
    server = await start_server(greeting="Hello.", silence_timeout_s=1.5)
    async with StreamNodeClient(sample_rate=16000) as node:
        await node.connect(server.url)
        await node.send_metadata({"callid": "call-silent"})
        async with CallerLine(node, 16000):
            gone = await node.wait_for("disconnect", timeout=10)
    plays = [e for e in node.events if e.kind == "playAudio"]
    greeting_end = plays[0].t
    assert len(plays) >= 2  # greeting, then the goodbye line
    assert gone.t - greeting_end >= 1.5
    assert all(e.t < gone.t for e in plays)
