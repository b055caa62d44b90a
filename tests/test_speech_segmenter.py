"""The utterance state machine on synthetic probability sequences (pure, no model)."""

from __future__ import annotations

import pytest

from audio.speech_segmenter import (
    SegmenterSettings,
    SpeechEvent,
    SpeechEventKind,
    SpeechSegmenter,
)

START, END = SpeechEventKind.START, SpeechEventKind.END
W = 32.0  # silero's window


def run(probabilities: list[float], settings: SegmenterSettings | None = None) -> list[SpeechEvent]:
    segmenter = SpeechSegmenter(W, settings or SegmenterSettings(start_ms=96, end_ms=160))
    return [event for p in probabilities for event in segmenter.push(p)]


def kinds(events: list[SpeechEvent]) -> list[tuple[SpeechEventKind, float]]:
    return [(e.kind, e.at_ms) for e in events]


@pytest.mark.parametrize(
    ("probabilities", "expected"),
    [
        pytest.param([0.0] * 20, [], id="silence"),
        pytest.param([0.9, 0.9, 0.0] * 5, [], id="clicks-shorter-than-start_ms"),
        pytest.param(
            [0.0] * 3 + [0.9] * 5 + [0.0] * 6,
            [(START, 3 * W), (END, 8 * W)],
            id="one-utterance-dated-where-speech-began-and-stopped",
        ),
        pytest.param(
            [0.9] * 4 + [0.0] * 4 + [0.9] * 4 + [0.0] * 5,
            [(START, 0.0), (END, 12 * W)],
            id="a-pause-shorter-than-end_ms-stays-inside",
        ),
        pytest.param(
            [0.9] * 4 + [0.0] * 5 + [0.9] * 4 + [0.0] * 5,
            [(START, 0.0), (END, 4 * W), (START, 9 * W), (END, 13 * W)],
            id="two-utterances",
        ),
        pytest.param(
            [0.9] * 4 + [0.45] * 10 + [0.0] * 5,
            [(START, 0.0), (END, 14 * W)],
            id="hysteresis-keeps-a-dip-just-under-threshold-as-speech",
        ),
        pytest.param([0.9] * 4 + [0.3] * 5, [(START, 0.0), (END, 4 * W)], id="well-below-ends"),
    ],
)
def test_segmentation(
    probabilities: list[float], expected: list[tuple[SpeechEventKind, float]]
) -> None:
    assert kinds(run(probabilities)) == expected


def test_events_are_confirmed_after_start_ms_and_end_ms() -> None:
    events = run([0.0] * 2 + [0.9] * 6 + [0.0] * 8)
    start, end = events
    assert start.confirmed_ms - start.at_ms == 96.0  # three windows of speech
    assert end.confirmed_ms - end.at_ms == 160.0  # five windows of silence


def test_long_speech_is_cut_and_goes_on() -> None:
    settings = SegmenterSettings(start_ms=64, end_ms=160, max_utterance_ms=320)
    events = run([0.9] * 25 + [0.0] * 5, settings)
    assert kinds(events) == [
        (START, 0.0),
        (END, 10 * W),
        (START, 10 * W),
        (END, 20 * W),
        (START, 20 * W),
        (END, 25 * W),
    ]
    assert [e.cut for e in events if e.kind is END] == [True, True, False]


def quiet(segmenter: SpeechSegmenter) -> tuple[float, float | None]:
    return segmenter.silence_ms, segmenter.silence_started_ms


def test_silence_tracking_while_speaking() -> None:
    segmenter = SpeechSegmenter(W, SegmenterSettings(start_ms=64, end_ms=320))
    for p in [0.9, 0.9, 0.9]:
        segmenter.push(p)
    assert segmenter.speaking and quiet(segmenter) == (0, None)
    segmenter.push(0.0)
    segmenter.push(0.0)
    assert quiet(segmenter) == (2 * W, 3 * W)
    segmenter.push(0.9)
    assert quiet(segmenter) == (0, None)
    segmenter.reset()
    assert (segmenter.speaking, segmenter.position_ms) == (False, 0)


@pytest.mark.parametrize(
    "bad",
    [
        {"threshold": 1.0},
        {"threshold": 0.5, "hysteresis": 0.5},
        {"start_ms": 0},
        {"end_ms": -1},
        {"start_ms": 500, "max_utterance_ms": 100},
    ],
)
def test_bad_settings_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        SegmenterSettings(**bad)  # type: ignore[arg-type]
