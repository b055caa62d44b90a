"""silero VAD on real audio: speech fixtures, silence, white noise, every call rate."""

from __future__ import annotations

import numpy as np
import pytest

from audio.resample import resample
from audio.speech_segmenter import SegmenterSettings, SpeechEvent, SpeechEventKind
from audio.vad import SileroVadModel, VoiceActivityDetector
from audio.wav import read_wav_file
from tests.conftest import FIXTURES

START, END = SpeechEventKind.START, SpeechEventKind.END


def detect(pcm: bytes, rate: int, frame_ms: int = 20) -> list[SpeechEvent]:
    model = SileroVadModel.shared()
    vad_rate = VoiceActivityDetector.vad_rate(rate)
    with VoiceActivityDetector(model, model.acquire(vad_rate), rate, SegmenterSettings()) as vad:
        frame = rate * frame_ms // 1000 * 2
        pcm += bytes(rate * 2)  # a second of silence after: the end is confirmed
        return [e for i in range(0, len(pcm), frame) for e in vad.push(pcm[i : i + frame])]


@pytest.mark.parametrize(
    "name",
    ["question.wav", "question_8k.wav", "stop.wav", "ask_hours_8k.wav", "ask_person.wav"],
)
def test_each_fixture_is_one_utterance_where_the_speech_is(name: str) -> None:
    wav = read_wav_file(FIXTURES / name)
    events = detect(wav.pcm, wav.sample_rate)
    assert [e.kind for e in events] == [START, END]
    start, end = events
    # Every fixture has 0.3 s of digital silence first, and ends where the speech ends.
    assert 250 <= start.at_ms <= 500  # soft onsets ("wh") score as speech a little late
    assert abs(end.at_ms - wav.duration_s * 1000) <= 150
    assert end.confirmed_ms - end.at_ms >= SegmenterSettings().end_ms


def test_silence_and_white_noise_are_not_speech() -> None:
    rng = np.random.default_rng(7)
    silence = bytes(16000 * 2 * 3)
    assert detect(silence, 16000) == []
    for dbfs in (-35.0, -20.0, -10.0):
        noise = rng.standard_normal(16000 * 3) * 32768 * 10 ** (dbfs / 20)
        pcm = noise.clip(-32768, 32767).astype("<i2").tobytes()
        assert detect(pcm, 16000) == [], f"white noise at {dbfs} dBFS"
        assert detect(resample(pcm, 16000, 8000), 8000) == [], f"8 kHz noise at {dbfs} dBFS"


@pytest.mark.parametrize("rate", [24000, 32000, 48000])
def test_other_call_rates_are_resampled_to_16k(rate: int) -> None:
    wav = read_wav_file(FIXTURES / "question.wav")
    events = detect(resample(wav.pcm, 16000, rate), rate)
    assert [e.kind for e in events] == [START, END]
    assert abs(events[1].at_ms - wav.duration_s * 1000) <= 150


def test_frame_size_does_not_change_the_result() -> None:
    wav = read_wav_file(FIXTURES / "stop.wav")
    by_frame = {ms: detect(wav.pcm, 16000, frame_ms=ms) for ms in (10, 20, 30, 100)}
    assert len({tuple(events) for events in by_frame.values()}) == 1


def test_the_pool_reuses_instances_and_resets_them() -> None:
    model = SileroVadModel()
    first = model.acquire(16000)
    model.release(16000, first)
    assert model.try_acquire(16000) is first  # the same instance: no build per call
    assert model.try_acquire(16000) is None
    assert model.built == 1
    wav = read_wav_file(FIXTURES / "stop.wav")
    detector = VoiceActivityDetector(model, first, 16000)
    detector.push(wav.pcm[: len(wav.pcm) // 2])
    assert detector.speaking
    detector.close()
    detector.close()  # idempotent
    again = VoiceActivityDetector(model, model.acquire(16000), 16000)
    assert not again.speaking and again.position_ms == 0
    assert again.push(bytes(16000)) == []  # reset: no speech carried over
    with pytest.raises(ValueError, match="not 16000"):
        VoiceActivityDetector(model, model.build(8000), 16000)
