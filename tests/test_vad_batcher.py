"""Many calls' VAD windows in one ONNX run: each call hears what it would hear alone, a
cancelled or closed wait leaves nothing behind, a model failure reaches every waiter.

The real silero model runs in its worker thread; the calls run on virtual time (a
thread's work takes no virtual time there), so which windows share a batch is the same
on every run.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from audio.resample import resample
from audio.speech_segmenter import SegmenterSettings, SpeechEvent, SpeechEventKind
from audio.vad import SileroVadModel, VoiceActivityDetector
from audio.vad_batcher import VadBatcher
from audio.vad_model import CONTEXT, WINDOW
from pipeline.call.inbox import CallerVoice, Inbox
from testkit.virtual_time import run_virtual
from tests.caller import fixture_pcm

START, END = SpeechEventKind.START, SpeechEventKind.END
SETTINGS = SegmenterSettings()


def caller_audio(name: str, rate: int, lead_s: float) -> bytes:
    """A fixture at ``rate``, after ``lead_s`` of silence and before a second of it."""
    pcm = resample(fixture_pcm(name), 16000, rate) if rate != 16000 else fixture_pcm(name)
    return bytes(int(lead_s * rate) * 2) + pcm + bytes(rate * 2)


async def hear(
    detector: VoiceActivityDetector, pcm: bytes, frame_ms: int = 20
) -> list[SpeechEvent]:
    """The caller's line into the detector in real (virtual) time."""
    frame = detector.sample_rate * frame_ms // 1000 * 2
    events = []
    for i in range(0, len(pcm), frame):
        events += await detector.push(pcm[i : i + frame])
        await asyncio.sleep(frame_ms / 1000)
    return events


CALLS = [  # (fixture, call rate, silence before it): overlapping speech, two rates
    ("question.wav", 16000, 0.0),
    ("stop.wav", 16000, 0.25),
    ("ask_person.wav", 16000, 0.5),
    ("question.wav", 8000, 0.1),
    ("stop.wav", 8000, 0.3),
]


def test_calls_scored_together_hear_what_each_hears_alone() -> None:
    model = SileroVadModel()
    audio = [caller_audio(name, rate, lead) for name, rate, lead in CALLS]

    async def alone() -> list[list[SpeechEvent]]:
        heard = []
        for (_, rate, _), pcm in zip(CALLS, audio, strict=True):
            heard.append(await hear(VoiceActivityDetector(model, rate, SETTINGS), pcm))
        assert model.batcher().largest == 1
        return heard

    async def together() -> tuple[list[list[SpeechEvent]], VadBatcher]:
        detectors = [VoiceActivityDetector(model, rate, SETTINGS) for _, rate, _ in CALLS]
        heard = await asyncio.gather(
            *(hear(d, pcm) for d, pcm in zip(detectors, audio, strict=True))
        )
        return list(heard), model.batcher()

    expected = run_virtual(alone())
    heard, batcher = run_virtual(together())
    assert heard == expected
    for events in heard:
        assert [e.kind for e in events] == [START, END]
    assert batcher.largest >= 3  # the 16 kHz calls' windows did share runs
    assert batcher.runs < batcher.windows


def test_interleaved_pushes_keep_each_calls_state_apart() -> None:
    """Two calls' frames alternate on one loop, different frame sizes: same events."""
    model = SileroVadModel()
    first, second = fixture_pcm("question.wav"), fixture_pcm("ask_person.wav") + bytes(32000)

    async def run(pieces: list[tuple[int, bytes]]) -> dict[int, list[SpeechEvent]]:
        detectors = {0: VoiceActivityDetector(model, 16000), 1: VoiceActivityDetector(model, 16000)}
        heard: dict[int, list[SpeechEvent]] = {0: [], 1: []}
        for call, pcm in pieces:
            heard[call] += await detectors[call].push(pcm)
        return heard

    a = [(0, first[i : i + 960]) for i in range(0, len(first), 960)]  # 30 ms frames
    b = [(1, second[i : i + 3200]) for i in range(0, len(second), 3200)]  # 100 ms frames
    mixed = [piece for pair in zip(a, b, strict=False) for piece in pair]
    mixed += a[len(b) :] + b[len(a) :]
    apart = run_virtual(run(a + b))
    assert run_virtual(run(mixed)) == apart
    assert [e.kind for e in apart[0]] == [START] and [e.kind for e in apart[1]] == [START, END]


def test_a_cancelled_push_loses_nothing() -> None:
    model = SileroVadModel(linger_s=0.05)
    pcm = caller_audio("stop.wav", 16000, 0.0)

    async def cancelled_once() -> list[SpeechEvent]:
        detector = VoiceActivityDetector(model, 16000)
        head, tail = pcm[:16000], pcm[16000:]
        await model.batcher().score(16000, *window_row(), stream="another call")
        waiting = asyncio.create_task(detector.push(head))  # lingers for "another call"
        await asyncio.sleep(0.01)  # its first window waits in the line
        assert model.batcher().waiting == 1
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        events = await detector.push(tail)  # the same window is scored again first
        assert model.batcher().waiting == 0
        return events

    async def straight() -> list[SpeechEvent]:
        return await VoiceActivityDetector(model, 16000).push(pcm)

    assert run_virtual(cancelled_once()) == run_virtual(straight())


def test_one_push_at_a_time() -> None:
    async def body() -> None:
        detector = VoiceActivityDetector(SileroVadModel(), 16000)
        first = asyncio.create_task(detector.push(bytes(2048)))
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="one push at a time"):
            await detector.push(bytes(2048))
        await first

    run_virtual(body())


def test_a_lone_stream_never_lingers() -> None:
    async def body() -> None:
        batcher = SileroVadModel(linger_s=0.05).batcher()
        loop = asyncio.get_running_loop()
        for _ in range(3):
            started = loop.time()
            await batcher.score(16000, *window_row(), stream="the only call")
            assert loop.time() == started  # the model's run takes no virtual time
            await asyncio.sleep(0.032)
        assert batcher.runs == 3 and batcher.largest == 1

    run_virtual(body())


def test_a_batch_goes_once_every_recent_stream_is_in_it() -> None:
    async def body() -> None:
        batcher = SileroVadModel(linger_s=0.05).batcher()
        loop = asyncio.get_running_loop()
        zero = loop.time()
        await batcher.score(16000, *window_row(), stream="a")  # alone: at once
        await asyncio.sleep(0.001)
        b = asyncio.create_task(batcher.score(16000, *window_row(), stream="b"))
        await asyncio.sleep(0.009)
        assert not b.done() and batcher.waiting == 1  # "a" sent lately: b waits for it
        await batcher.score(16000, *window_row(), stream="a")
        await b
        assert loop.time() - zero == pytest.approx(0.010)  # not the 0.05 linger
        assert batcher.runs == 2 and batcher.largest == 2
        await asyncio.sleep(0.1)  # both fall quiet for longer than a window
        started = loop.time()
        await batcher.score(16000, *window_row(), stream="b")  # "a" no longer counts
        assert loop.time() == started
        started = loop.time()
        await batcher.score(8000, *window_row(8000), stream="a")  # each rate counts apart
        assert loop.time() == started

    run_virtual(body())


class _Held(SileroVadModel):
    """The real model, but each run waits until the test lets it go (or fails)."""

    def __init__(self, error: Exception | None = None) -> None:
        super().__init__()
        self.started = threading.Event()
        self.go = threading.Event()
        self.error = error

    def run_streams(
        self, rate: int, rows: list[np.ndarray], states: list[np.ndarray]
    ) -> tuple[list[float], list[np.ndarray]]:
        self.started.set()
        self.go.wait(10)
        if self.error is not None:
            raise self.error
        return super().run_streams(rate, rows, states)


def window_row(rate: int = 16000) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.zeros(CONTEXT[rate] + WINDOW[rate], dtype=np.float32),
        np.zeros((2, 128), dtype=np.float32),
    )


async def test_close_cancels_the_line_and_waits_for_the_run() -> None:
    model = _Held()
    batcher = model.batcher()
    in_run = asyncio.create_task(batcher.score(16000, *window_row()))
    await asyncio.to_thread(model.started.wait, 10)  # that window is in the run now
    in_line = asyncio.create_task(batcher.score(8000, *window_row(8000)))
    await asyncio.sleep(0.01)
    assert batcher.waiting == 1
    closing = asyncio.create_task(batcher.aclose())
    await asyncio.sleep(0.01)
    assert not closing.done()  # the run in flight cannot be interrupted: it is waited for
    with pytest.raises(asyncio.CancelledError):
        await in_line
    model.go.set()
    await closing
    probability, state = await in_run  # its caller still gets its result
    assert 0.0 <= probability < 0.1 and state.shape == (2, 128)
    assert batcher.waiting == 0
    with pytest.raises(RuntimeError, match="closed"):
        await batcher.score(16000, *window_row())
    assert model.batcher() is not batcher  # the loop gets a fresh one if asked again


async def test_a_model_failure_reaches_every_waiting_call() -> None:
    model = _Held(RuntimeError("onnx broke"))
    model.go.set()
    detectors = [VoiceActivityDetector(model, 16000) for _ in range(3)]
    loud = (np.sin(np.arange(1024) / 3) * 8000).astype("<i2").tobytes()
    results = await asyncio.gather(*(d.push(loud) for d in detectors), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) and "onnx broke" in str(r) for r in results)


async def test_a_call_whose_vad_fails_goes_on_without_it() -> None:
    model = _Held(RuntimeError("onnx broke"))
    model.go.set()
    voice = CallerVoice(Inbox(asyncio.get_running_loop().time), 16000, SETTINGS)
    assert await voice.open(model)
    loud = (np.sin(np.arange(1024) / 3) * 8000).astype("<i2").tobytes()
    voice.hear(loud)  # logged, not raised: barge-in waits for words from now on
    for _ in range(20):
        await asyncio.sleep(0)
    voice.hear(loud)  # ignored: the call's VAD is off
    await voice.aclose()
    assert voice.scored == 0


async def test_hearing_never_waits_for_the_model_and_a_stalled_vad_skips_ahead() -> None:
    """The line's receive loop hands audio over and goes on; the VAD catches up in its
    own task, and more than MAX_BEHIND_MS of backlog is skipped as silence."""
    model = _Held()
    inbox = Inbox(asyncio.get_running_loop().time)
    voice = CallerVoice(inbox, 16000, SETTINGS)
    assert await voice.open(model)
    speech = caller_audio("question.wav", 16000, 0.3)
    frame = 640  # 20 ms at 16 kHz
    frames = [speech[i : i + frame] for i in range(0, len(speech) - frame + 1, frame)]
    for pcm in frames[:40]:  # 0.3 s of silence, then 0.5 s of the question
        voice.hear(pcm)
        await asyncio.sleep(0)
    await asyncio.to_thread(model.started.wait, 10)  # a window is in a (held) model run
    for pcm in frames[40:]:
        voice.hear(pcm)  # returns at once while the model is held
    # The backlog passed a second while the model hung: the oldest is dropped at once,
    # so the buffer stays bounded however long a model run takes.
    assert voice.skipped_ms > 0
    model.go.set()
    for pcm in frames:  # the VAD is caught up: the caller speaks again, in real time
        voice.hear(pcm)
        await asyncio.sleep(0.005)
    onset = await asyncio.wait_for(inbox.next(None), 10)
    assert onset is True  # the speech after the skip was heard
    await voice.aclose()
    assert voice.scored > 0
