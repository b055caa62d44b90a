"""The real local models: Moonshine behind the VAD-driven stream, and Piper at every rate.

The weights are loaded once per process (``MoonshineModel.shared()``, ...), so the whole
test session pays each load once.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from agents import EXAMPLE
from audio.resample import resample
from audio.vad import SileroVadModel
from audio.wav import read_wav_file
from pipeline.agent_file import load_agent_file
from pipeline.faq import FaqMatcher, MatchKind
from pipeline.inference_pool import InferencePool
from pipeline.providers.base import STTEvent, STTEventKind
from pipeline.providers.local_stt import LocalSTT, LocalSTTSettings
from pipeline.providers.moonshine_model import MoonshineModel
from pipeline.providers.moonshine_worker import MoonshineWorker
from pipeline.providers.piper_tts import PiperTTS, PiperVoiceModel, clauses
from tests.conftest import FIXTURES

AGENT = load_agent_file(EXAMPLE)
MATCHER = FaqMatcher(AGENT.faq, AGENT.transfer_phrases)


def local_stt(pool: InferencePool) -> LocalSTT:
    return LocalSTT(MoonshineModel.shared(), SileroVadModel.shared(), pool, LocalSTTSettings())


async def stream_fixture(
    name: str, rate: int | None = None, stt: LocalSTT | None = None
) -> list[STTEvent]:
    """Feed a fixture (then silence) through a real local STT stream, as 20 ms frames."""
    wav = read_wav_file(FIXTURES / name)
    rate = rate or wav.sample_rate
    pcm = resample(wav.pcm, wav.sample_rate, rate) + bytes(rate * 2)
    pool = InferencePool("test-stt", 1)
    stt = stt or local_stt(pool)
    events: list[STTEvent] = []
    async with stt.stream(rate) as stream:

        async def collect() -> None:
            async for event in stream.events():
                events.append(event)
                if event.kind is STTEventKind.FINAL:
                    return

        reader = asyncio.create_task(collect())
        frame = rate * 2 // 50
        for start in range(0, len(pcm), frame):
            stream.send_audio(pcm[start : start + frame])
            await asyncio.sleep(0)
        await asyncio.wait_for(reader, 30)
    pool.close()
    return events


@pytest.mark.parametrize(
    ("name", "rate", "expected"),
    [
        ("ask_hours.wav", None, "our opening hours"),
        ("ask_hours_8k.wav", None, "our opening hours"),  # 8 kHz, resampled with soxr
        ("ask_hours.wav", 48000, "our opening hours"),  # a 48 kHz node
        ("question.wav", None, "our opening hours"),
        ("ask_person.wav", None, "transfer"),
    ],
)
async def test_the_stream_hears_one_utterance_and_transcribes_it(
    name: str, rate: int | None, expected: str
) -> None:
    events = await stream_fixture(name, rate)
    assert events[0].kind is STTEventKind.SPEECH_STARTED
    final = events[-1]
    assert final.kind is STTEventKind.FINAL and final.speech_final
    assert [e.kind for e in events[1:-1]] in ([], [STTEventKind.INTERIM])
    match = MATCHER.match(final.text)
    topic = "transfer" if match.kind is MatchKind.TRANSFER else match.entry and match.entry.topic
    assert topic == expected, f"heard {final.text!r}"


async def test_a_slow_recogniser_leaves_out_the_interim_not_the_final() -> None:
    """On a loaded CPU an interim would outlast the utterance and hold up its final."""
    stt = local_stt(InferencePool("test-stt", 1))
    stt.rtf = 2.0  # as measured on a loaded box: 2 s of work per second of speech
    events = await stream_fixture("ask_hours.wav", stt=stt)
    await stt.aclose()
    assert [e.kind for e in events] == [STTEventKind.SPEECH_STARTED, STTEventKind.FINAL]
    assert "opening hours" in events[-1].text.lower() and stt.interims_skipped == 1
    assert stt.rtf is not None and stt.rtf < 2.0  # the final's job was measured


def test_interims_follow_the_measured_speed() -> None:
    stt = local_stt(InferencePool("unused", 1))  # nothing runs on it
    speeds = [stt.fast]  # nothing measured yet: assume an idle box
    stt._measured(0.3)
    speeds.append(stt.fast)
    for _ in range(3):
        stt._measured(1.2)  # the box got busy: smoothed, it takes a few jobs to tell
    speeds.append(stt.fast)
    for _ in range(6):
        stt._measured(0.25)
    speeds.append(stt.fast)
    assert speeds == [True, True, False, True]
    assert stt.stats()["rtf"] == round(stt.rtf or 0, 3) > 0


def test_moonshine_transcribes_8k_and_16k_alike() -> None:
    model = MoonshineModel.shared()
    wav = read_wav_file(FIXTURES / "ask_hours.wav")
    text_16k = model.transcribe_pcm(wav.pcm, 16000)
    text_8k = model.transcribe_pcm(read_wav_file(FIXTURES / "ask_hours_8k.wav").pcm, 8000)
    assert "opening hours" in text_16k.lower()
    assert "opening" in text_8k.lower()  # narrowband espeak is harder: "What are you opening..."
    for text in (text_16k, text_8k):
        match = MATCHER.match(text)
        assert match.entry is not None and match.entry.topic == "our opening hours"
    assert model.transcribe(np.zeros(0, dtype=np.float32)) == ""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello!", ["Hello!"]),
        (
            "We're open Monday to Saturday, from nine in the morning to seven in the evening.",
            ["We're open Monday to Saturday,", "from nine in the morning to seven in the evening."],
        ),
        (
            "Yes, we are open on Sundays from ten in the morning until two in the afternoon.",
            ["Yes, we are open on Sundays from ten in the morning until two in the afternoon."],
        ),
        ("", []),
    ],
)
def test_long_sentences_are_rendered_clause_by_clause(text: str, expected: list[str]) -> None:
    assert clauses(text) == expected


@pytest.mark.parametrize("rate", [8000, 16000, 48000])
async def test_piper_speaks_at_the_call_rate(rate: int) -> None:
    pool = InferencePool("test-tts", 1)
    tts = PiperTTS(PiperVoiceModel.shared(), pool)
    before = tts.audio_s
    pieces = [pcm async for pcm in tts.synthesize("Hello there. We are open today.", rate)]
    pool.close()
    rendered_s = tts.audio_s - before
    assert len(pieces) >= 2  # one sentence at a time: the first plays while the next renders
    seconds = sum(len(p) for p in pieces) / (rate * 2)
    assert abs(seconds - rendered_s) < 0.05  # same duration, resampled from 22.05 kHz
    assert all(len(p) % 2 == 0 for p in pieces)
    heard = MoonshineModel.shared().transcribe_pcm(b"".join(pieces), rate).lower()
    assert "hello" in heard and "open" in heard
    assert tts.cache_key("Hi.", rate) == ("piper", "en_US-joe-medium", str(rate), "Hi.")
    assert tts.cache_key("Hi.", rate) != tts.cache_key("Hi.", 8000 if rate != 8000 else 16000)


def test_the_worker_process_is_replaced_before_its_leak_matters() -> None:
    """moonshine-cpp 0.1.4 leaks per transcription: the server runs it in a child process
    and swaps in a warm standby every ``recycle_after`` transcriptions."""
    worker = MoonshineWorker(recycle_after=2)
    try:
        worker.warm()
        wav = read_wav_file(FIXTURES / "ask_hours.wav")
        texts = [worker.transcribe_pcm(wav.pcm, 16000) for _ in range(3)]
        assert worker.recycled == 1  # after the second transcription
        assert all("opening hours" in text.lower() for text in texts), texts
    finally:
        worker.close()
    with pytest.raises(ValueError, match="at least 1"):
        MoonshineWorker(recycle_after=0)
