"""End-to-end calls: the Stream Node simulator -> our server -> the provider fakes.

Every hop is a real socket and every client is the real SDK. Audio is paced in real
time where timing matters, so these tests are few and each proves a whole behaviour.
"""

from __future__ import annotations

import json

from audio.wav import read_wav_file
from server.simulator import StreamNodeClient
from testkit import FakeProviders, llm
from tests.caller import CallerLine, wait_until_quiet
from tests.conftest import FIXTURES, StartServer

SEED_METADATA = json.dumps(
    "{'callid': 'call-seed-1', 'virtual_number': '+911234567890', "
    "'customer_number': '+919876543210', 'call_type': 'inbound'}"
)


def fixture_pcm(name: str) -> bytes:
    return read_wav_file(FIXTURES / name).pcm


async def test_greeting_then_streamed_reply(
    fakes: FakeProviders, start_server: StartServer
) -> None:
    server = await start_server()
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
        assert len(event.wav.pcm) <= 3200
    assert sum(1 for e in plays if len(e.wav.pcm) == 3200) >= len(plays) - 4  # type: ignore[union-attr]
    body = reply_request.body
    assert body["model"] == "gpt-4o-mini" and body["stream"] is True
    assert "tools" not in body  # no TRANSFER_NUMBER, no transfer tool
    assert reply_request.messages[-1] == {
        "role": "user",
        "content": "What time do you open tomorrow?",
    }
    record = server.state.registry.get("call-seed-1")
    assert record is not None and record.customer_number == "+919876543210"
    assert record.turns == 1 and len(record.turn_latencies_ms) == 1
