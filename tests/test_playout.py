"""The playback clock and the 'what did the caller hear' estimate, without sockets."""

from __future__ import annotations

import pytest

from pipeline.history import History
from pipeline.playout import Playout, SpokenSpan, heard_text
from testkit.memory import MemoryLine


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _span(text: str, start: float, end: float, complete: bool = True) -> SpokenSpan:
    return SpokenSpan(text, start=start, end=end, complete=complete)


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (0.5, ""),
        (1.0, ""),
        (2.0, "one two three four"),
        (3.0, "one two three four five six"),
        (3.5, "one two three four five six seven"),
        (9.0, "one two three four five six seven eight nine ten"),
    ],
)
def test_heard_text_cuts_at_playback_time(at: float, expected: str) -> None:
    spans = [
        _span("one two three four", 1.0, 2.0),
        _span("five six seven eight nine ten", 2.0, 5.0),
    ]
    assert heard_text(spans, at) == expected


def test_incomplete_span_is_never_fully_heard() -> None:
    spans = [_span("alpha beta", 0.0, 1.0, complete=False)]
    assert heard_text(spans, 5.0) == "alpha"


async def test_playout_clock_queues_chunks_back_to_back() -> None:
    clock = FakeClock()
    line = MemoryLine(8000, 100, clock=clock)
    playout = Playout(line, clock=clock)
    assert playout.chunk_bytes == 1600
    span = SpokenSpan("hello")
    for _ in range(3):
        await playout.send_pcm(b"\x01\x00" * 800, span)
    assert playout.speaking()
    assert playout.remaining_s() == pytest.approx(0.3)
    assert span.start == pytest.approx(1000.0)
    assert span.end == pytest.approx(1000.3)
    clock.now += 0.25
    assert playout.remaining_s() == pytest.approx(0.05)
    # The queue ran dry: the next chunk starts when it arrives, not at the old end.
    clock.now += 1.0
    assert not playout.speaking()
    await playout.send_pcm(b"\x00\x00" * 400)
    assert playout.remaining_s() == pytest.approx(0.05)
    await playout.kill()
    assert not playout.speaking()
    assert [a.kind for a in line.actions] == ["play"] * 4 + ["clear"]
    assert line.actions[0].pcm_bytes == 1600


def test_history_revise_and_bound() -> None:
    history = History("system", max_messages=4)
    history.add("user", "hi")
    entry = history.add("assistant", "hello there how are you")
    history.revise(entry, "hello there")
    assert history.messages("next")[-2:] == [
        {"role": "assistant", "content": "hello there"},
        {"role": "user", "content": "next"},
    ]
    history.revise(entry, "")
    assert history.turns == [{"role": "user", "content": "hi"}]
    for i in range(10):
        history.add("user", str(i))
    assert len(history.turns) == 4
    assert history.messages()[0] == {"role": "system", "content": "system"}
