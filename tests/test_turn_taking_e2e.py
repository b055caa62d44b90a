"""Turn-taking end to end: the Stream Node simulator -> our server -> the provider fakes.

Speech fixtures (espeak-ng, English and Hindi) are streamed in real time over a reply:
a backchannel leaves it playing to the end, "wait, stop" cuts it, a jittery line never
runs dry inside it, and a Hindi call runs in Hindi from ``/voice?lang=hi`` on.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from pipeline.language import HINDI_LINES
from streamnode.client import StreamNodeClient
from testkit import FakeProviders, llm
from tests.caller import CallerLine, fixture_pcm, live_call, session_tasks, wait_until_quiet
from tests.conftest import StartServer, VoiceServer

pytestmark = pytest.mark.timeout(60)

REPLY = (
    "Our branch opens at nine in the morning and closes at six in the evening. "
    "On Saturdays we open at ten and close at two in the afternoon."
)


def reply_audio_ms(fakes: FakeProviders, since: float, rate: int) -> float:
    """All the audio the TTS made for requests after ``since``."""
    made = sum(r.audio_bytes for r in fakes.cartesia.requests if r.received_at > since)
    return made * 1000 / (rate * 2)


def played_ms(node: StreamNodeClient, since: float) -> float:
    return sum(e.duration_ms for e in node.events if e.kind == "playAudio" and e.t > since)


async def ask(fakes: FakeProviders, line: CallerLine, question: str) -> float:
    """Say the question fixture; returns when its reply request reached the LLM."""
    fakes.deepgram.utterances.append(question)
    line.say(fixture_pcm("question_8k.wav"))
    request = (await fakes.openai.wait_for_requests(1, timeout_s=10))[0]
    return request.received_at


async def cleaned_up(server: VoiceServer) -> None:
    async with asyncio.timeout(10):
        while server.state.registry.active() or session_tasks():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


@pytest.mark.parametrize(
    ("fixture", "transcript"),
    [("bc_hmm.wav", "Hmm."), ("bc_okay.wav", "Okay."), ("bc_haan.wav", "हाँ")],
)
async def test_a_backchannel_while_the_bot_speaks_leaves_the_reply_playing_to_the_end(
    fixture: str, transcript: str, fakes: FakeProviders, start_server: StartServer
) -> None:
    server = await start_server(greeting="Hello.")
    fakes.openai.replies.append(llm.Text(REPLY))
    async with live_call(server.url + "?sample_rate=8000", "call-bc", 8000) as (node, line):
        asked_at = await ask(fakes, line, "When are you open?")
        reply = await node.wait_for("playAudio", after=asked_at, timeout=10)
        await asyncio.sleep(max(0.0, reply.t + 1.0 - time.monotonic()))
        fakes.deepgram.utterances.append(transcript)
        line.say(fixture_pcm(fixture))
        await asyncio.sleep(1.5)  # its words and its final come while the reply plays
        await wait_until_quiet(node)
    assert node.problems == []
    assert node.counts["killAudio"] == 0
    assert fakes.openai.requests[-1].received_at == asked_at  # no turn of its own
    # Every bit of the reply the TTS made was played: nothing cut, nothing lost.
    assert played_ms(node, asked_at) == pytest.approx(reply_audio_ms(fakes, asked_at, 8000))
    record = server.state.registry.get("call-bc")
    assert record is not None and (record.turns, record.barge_ins) == (1, 0)
    await cleaned_up(server)


async def test_wait_stop_cuts_the_reply_and_is_answered(
    fakes: FakeProviders, start_server: StartServer
) -> None:
    server = await start_server(greeting="Hello.")
    fakes.openai.replies.extend([llm.Text(REPLY), llm.Text("Sure, go ahead.")])
    async with live_call(server.url + "?sample_rate=8000", "call-stop", 8000) as (node, line):
        asked_at = await ask(fakes, line, "When are you open?")
        reply = await node.wait_for("playAudio", after=asked_at, timeout=10)
        await asyncio.sleep(max(0.0, reply.t + 1.0 - time.monotonic()))
        fakes.deepgram.utterances.append("Wait, stop.")
        line.say(fixture_pcm("stop_8k.wav"))
        said_at = await line.speech_start()
        kill = await node.wait_for("killAudio", timeout=5)
        second = (await fakes.openai.wait_for_requests(2, timeout_s=10))[1]
        await node.wait_for("playAudio", after=second.received_at, timeout=5)
        await wait_until_quiet(node)
    assert node.counts["killAudio"] == 1
    speech_at = said_at + 0.3  # the fixture's lead-in silence
    print(f"turn-taking e2e | speech onset -> killAudio: {(kill.t - speech_at) * 1000:.0f} ms")
    assert kill.t - speech_at < 1.5
    assert played_ms(node, asked_at) < reply_audio_ms(fakes, asked_at, 8000)
    assert second.messages[-1] == {"role": "user", "content": "Wait, stop."}
    heard = [m for m in second.messages if m["role"] == "assistant"][-1]["content"]
    assert 0 < len(heard.split()) < len(REPLY.split())  # the history keeps what was heard
    await cleaned_up(server)


@pytest.mark.parametrize("seed", [1, 2])
async def test_a_jittery_line_never_runs_dry_inside_a_reply(
    seed: int, fakes: FakeProviders, start_server: StartServer
) -> None:
    server = await start_server(greeting="Hello.")
    fakes.openai.replies.append(llm.Text(REPLY))
    async with StreamNodeClient(sample_rate=8000, jitter_s=0.15, jitter_seed=seed) as node:
        await node.connect(server.url + "?sample_rate=8000")
        await node.send_metadata({"callid": f"call-jitter-{seed}"})
        async with CallerLine(node, 8000) as line:
            await node.wait_for("playAudio", timeout=5)
            await wait_until_quiet(node)
            asked_at = await ask(fakes, line, "When are you open?")
            await node.wait_for("playAudio", after=asked_at, timeout=10)
            await asyncio.sleep(0.5)
            await wait_until_quiet(node)
    assert node.problems == []
    assert played_ms(node, asked_at) > 4000  # a long reply, several sentences
    assert node.underruns == []  # the greeting and the reply each played without a gap
    await cleaned_up(server)


async def test_a_hindi_call_runs_in_hindi_from_the_url(
    fakes: FakeProviders, start_server: StartServer
) -> None:
    server = await start_server(cartesia_voice_id_hi="hindi-voice")
    question = "आप कल कितने बजे खुलते हैं?"
    fakes.deepgram.utterances.append(question)
    url = server.url + "?sample_rate=8000&lang=hi"
    async with live_call(url, "call-hindi", 8000) as (node, line):
        line.say(fixture_pcm("hi_question.wav"))
        request = (await fakes.openai.wait_for_requests(1, timeout_s=10))[0]
        await node.wait_for("playAudio", after=request.received_at, timeout=10)
        await wait_until_quiet(node)
    assert node.problems == []
    (connection,) = fakes.deepgram.connections
    assert connection.query["language"] == "hi"
    assert request.messages[0] == {"role": "system", "content": HINDI_LINES.system_prompt}
    assert request.messages[-1] == {"role": "user", "content": question}
    hindi = [r for r in fakes.cartesia.requests if r.body["voice"]["id"] == "hindi-voice"]
    assert all(r.body["language"] == "hi" for r in hindi)
    said = [r.text for r in hindi if r.received_at > request.received_at]
    # The fake LLM answers Devanagari in Hindi; the splitter cut it at the danda.
    assert said == ["आपने कहा: आप कल कितने बजे खुलते हैं।", "और कुछ?"]
    greeted = [r.text for r in hindi if r.received_at < request.received_at]
    assert HINDI_LINES.greeting in greeted
    english = [r for r in fakes.cartesia.requests if r.body["voice"]["id"] != "hindi-voice"]
    assert all(r.body["language"] == "en" for r in english)  # the server's other calls
    assert fakes.cartesia.sockets_opened == 1  # both voices on the process's one socket
    await cleaned_up(server)


async def test_a_preemptive_reply_is_kept_when_the_final_matches(
    fakes: FakeProviders, start_server: StartServer
) -> None:
    server = await start_server(greeting="Hello.", preemptive_reply=True, preemptive_quiet_ms=0)
    fakes.deepgram.endpointing_override_ms = 600  # the final comes well after the VAD's end
    fakes.openai.replies.append(llm.Text("We open at nine."))
    async with live_call(server.url + "?sample_rate=8000", "call-pre", 8000) as (node, line):
        fakes.deepgram.utterances.append("What time do you open tomorrow?")
        line.say(fixture_pcm("question_8k.wav"))
        ended = await line.said()
        reply = await node.wait_for("playAudio", after=ended, timeout=10)
        await wait_until_quiet(node)
    (request,) = fakes.openai.requests  # one request: started on the interim, kept
    assert request.messages[-1] == {"role": "user", "content": "What time do you open tomorrow?"}
    (connection,) = fakes.deepgram.connections
    final_at = connection.first_sent_at("Results", speech_final=True)
    assert final_at is not None
    assert request.received_at < final_at  # the LLM was asked before the final existed
    assert reply.t - ended < 1.5
    await cleaned_up(server)
