"""Keyless calls end to end: no keys, no fakes, the real local models on real sockets.

One keyless server (Moonshine, the FAQ agent on ``agents/example.yaml``, Piper) serves the
module; calls are placed through the Stream Node simulator with espeak-ng speech, in real
time. What the bot said is checked by transcribing its audio back with the local STT.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from agents import EXAMPLE
from audio.wav import read_wav_file
from pipeline.agent_file import load_agent_file
from pipeline.providers.moonshine_model import MoonshineModel
from server import local_stack
from server.application import create_app
from streamnode.call import run_call
from streamnode.client import ReceivedEvent, StreamNodeClient
from streamnode.lookup import heard_in
from testkit import AppServer
from tests.caller import CallerLine, eventually, session_tasks, wait_until_quiet
from tests.conftest import FIXTURES, VoiceServer, make_settings

pytestmark = pytest.mark.asyncio(loop_scope="module")

AGENT = load_agent_file(EXAMPLE)
LOCAL = {"stt_provider": "local", "llm_provider": "local", "tts_provider": "local"}
TIMEOUT_S = 60.0  # generous: a shared 2-core box; speed is measured in bench/, not here


async def start_keyless(**overrides: str) -> tuple[AppServer, VoiceServer]:
    app = create_app(make_settings({}, **{**LOCAL, **overrides}))
    server = AppServer(app, lifespan="on", ws="websockets-sansio")
    await server.start()
    return server, VoiceServer(app, server)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def keyless() -> AsyncIterator[VoiceServer]:
    server, voice = await start_keyless()
    state = voice.state
    lines = len(state.agent.fixed_lines()) * 2  # each line at 16 and 8 kHz
    async with asyncio.timeout(TIMEOUT_S):
        while len(state.providers.cache) < lines:  # noqa: ASYNC110 (a background warm-up)
            await asyncio.sleep(0.1)
    yield voice
    await server.stop()


def tts_jobs(server: VoiceServer) -> int:
    stats = local_stack.stats(server.state.providers)
    assert stats is not None
    jobs: int = stats["local-tts"]["jobs"]
    return jobs


def turns(server: VoiceServer, call_id: str) -> int:
    record = server.state.registry.get(call_id)
    return 0 if record is None else record.turns


def sim_id() -> str:
    return f"sim-{secrets.token_hex(8)}"


def pcm_of(name: str) -> bytes:
    return read_wav_file(FIXTURES / name).pcm


def audio_after(node: StreamNodeClient, event: ReceivedEvent) -> bytes:
    """The bot's audio from ``event`` on (the node keeps every playAudio's PCM)."""
    before = 0
    for earlier in node.events:
        if earlier is event:
            break
        if earlier.kind == "playAudio" and earlier.wav is not None:
            before += len(earlier.wav.pcm)
    return bytes(node.bot_audio[before:])


async def ask(
    server: VoiceServer, fixture: str, rate: int, call_id: str
) -> tuple[StreamNodeClient, ReceivedEvent, str]:
    """Call, hear the greeting out, ask; returns the node, the reply's first playAudio and
    the reply as the local STT hears it."""
    jobs_before = tts_jobs(server)
    url = server.url if rate == 16000 else f"{server.url}?sample_rate={rate}"
    node = StreamNodeClient(sample_rate=rate)
    await node.connect(url)
    await node.send_metadata({"callid": call_id})
    greeting = await node.wait_for("playAudio", timeout=5)
    assert node.events[0] is greeting
    assert tts_jobs(server) == jobs_before  # the greeting came from the start-up cache
    async with CallerLine(node, rate) as line:
        await wait_until_quiet(node, timeout=TIMEOUT_S)
        line.say(pcm_of(fixture))
        spoken_at = await line.said(timeout=TIMEOUT_S)
        reply = await node.wait_for("playAudio", after=spoken_at, timeout=TIMEOUT_S)
        await node.wait_for_quiet(1.5, timeout=TIMEOUT_S)  # the whole answer has arrived
    heard = MoonshineModel.shared().transcribe_pcm(audio_after(node, reply), rate)
    return node, reply, heard.lower()


@pytest.mark.parametrize(
    ("fixture", "rate"), [("ask_hours.wav", 16000), ("ask_hours_8k.wav", 8000)]
)
async def test_a_spoken_question_gets_the_spoken_faq_answer(
    keyless: VoiceServer, fixture: str, rate: int
) -> None:
    call_id = sim_id()
    node, _, heard = await ask(keyless, fixture, rate, call_id)
    await node.close()
    assert node.problems == []
    assert "monday" in heard and "saturday" in heard, heard
    assert node.counts["killAudio"] == 0 and node.counts["disconnect"] == 0
    record = keyless.state.registry.get(call_id)
    assert record is not None and record.turns == 1 and len(record.turn_latencies_ms) == 1
    async with httpx.AsyncClient(base_url=keyless.http_url) as http:
        call = (await http.get(f"/calls/{call_id}")).json()  # the playground's history
        health = (await http.get("/health")).json()
    (said,) = heard_in(call["events"])
    assert "opening" in said.lower()
    assert health["stages"] == {"stt": "local", "llm": "local", "tts": "local"}


async def test_asking_for_a_person_ends_in_the_hand_off_and_a_transfer(
    keyless: VoiceServer,
) -> None:
    node, handoff, heard = await ask(keyless, "ask_person.wav", 16000, sim_id())
    await node.wait_for("transfer", timeout=TIMEOUT_S)  # once the hand-off line has played
    await node.close()
    assert node.transfer_destination == AGENT.transfer_number == "+918045678900"
    kinds = [e.kind for e in node.events if e.t >= handoff.t]
    assert kinds[-1] == "transfer" and set(kinds[:-1]) == {"playAudio"}
    assert "front desk" in heard and "hold" in heard, heard


async def test_speaking_over_the_answer_sends_kill_audio(keyless: VoiceServer) -> None:
    call_id = sim_id()
    async with StreamNodeClient(sample_rate=16000) as node:
        await node.connect(keyless.url)
        await node.send_metadata({"callid": call_id})
        await node.wait_for("playAudio", timeout=5)
        async with CallerLine(node, 16000) as line:
            await wait_until_quiet(node, timeout=TIMEOUT_S)
            line.say(pcm_of("ask_hours.wav"))  # the opening hours: several seconds of answer
            spoken_at = await line.said(timeout=TIMEOUT_S)
            # The answer's turn has started (not a late greeting chunk: playout is paced).
            await eventually(lambda: turns(keyless, call_id) >= 1, timeout=TIMEOUT_S)
            await node.wait_for("playAudio", after=time.monotonic(), timeout=TIMEOUT_S)
            assert node.is_playing
            line.say(pcm_of("stop_question.wav"))  # "Stop, stop, I have a question."
            kill = await node.wait_for("killAudio", after=spoken_at, timeout=TIMEOUT_S)
            assert line.speech_started_at is not None and kill.t > line.speech_started_at
    record = keyless.state.registry.get(call_id)
    assert record is not None and record.barge_ins == 1
    await asyncio.sleep(0.1)
    assert session_tasks() == set()  # every task of every call ended


async def test_the_simulator_reports_what_the_server_heard(
    keyless: VoiceServer, tmp_path: Path
) -> None:
    saved = tmp_path / "bot.wav"
    report = await run_call(
        keyless.url,
        wav=FIXTURES / "ask_hours.wav",
        seconds_of_silence_after=6.0,
        save_audio=saved,
        metadata={"callid": sim_id()},
    )
    assert report.ok and report.greeting_latency_ms is not None
    assert report.heard is not None and len(report.heard) == 1
    assert "opening" in report.heard[0].lower()
    assert report.reply_latencies_ms[0] is not None and report.hint is None
    assert read_wav_file(saved).duration_s > 2


async def test_a_server_that_cannot_run_a_call_says_so(tmp_path: Path) -> None:
    server, voice = await start_keyless(stt_provider="deepgram")  # no DEEPGRAM_API_KEY
    try:
        async with httpx.AsyncClient(base_url=voice.http_url) as http:
            ready = await http.get("/ready")
            health = (await http.get("/health")).json()
        assert (ready.status_code, ready.json()["status"]) == (503, "unavailable")
        assert health["stages"] == {"stt": None, "llm": "local", "tts": "local"}
        assert health["missing"] == ["DEEPGRAM_API_KEY"]
        report = await run_call(
            voice.url,
            wav=FIXTURES / "ask_hours.wav",
            seconds_of_silence_after=3.0,
            metadata={"callid": sim_id()},
        )
    finally:
        await server.stop()
    assert report.counts["playAudio"] > 0 and report.counts["disconnect"] == 1  # the apology
    assert report.hint is not None
    assert "STT: STT_PROVIDER=deepgram but DEEPGRAM_API_KEY is not set" in report.hint
