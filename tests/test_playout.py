"""The playback clock and the 'what did the caller hear' estimate, without sockets."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from pipeline.history import History
from pipeline.playout import Playout, SpokenSpan, heard_text
from testkit.memory import MemoryLine
from testkit.virtual_time import run_virtual


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


CHUNK = b"\x01\x00" * 800  # 100 ms at 8 kHz


def paced(body: Callable[[Playout, MemoryLine], Awaitable[None]], **options: Any) -> None:
    """Run ``body`` with a paced playout on a virtual-time loop; no task may be left."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        line = MemoryLine(8000, 100, clock=loop.time)
        playout = Playout(line, clock=loop.time, **options)
        await body(playout, line)
        await playout.aclose()
        leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert not leftover, leftover

    run_virtual(main())


def sends(line: MemoryLine, since: float) -> list[tuple[float, int]]:
    """(ms after ``since``, ms of audio) of every play from ``since`` on."""
    plays = [a for a in line.actions if a.kind == "play" and a.at >= since]
    return [(round((a.at - since) * 1000), a.pcm_bytes // 16) for a in plays]


def test_a_reply_goes_out_just_in_time_a_lead_ahead_of_the_ear() -> None:
    async def body(playout: Playout, line: MemoryLine) -> None:
        t0 = asyncio.get_running_loop().time()
        span = SpokenSpan("hello there")
        for _ in range(10):  # the TTS made a whole second at once
            await playout.send_pcm(CHUNK, span)
        playout.end_span(span)
        assert playout.speaking() and playout.buffered_s == pytest.approx(1.0)
        await asyncio.sleep(0.05)
        # A 200 ms first frame to the dry line, then up to the 400 ms lead at once...
        assert sends(line, t0) == [(0, 200), (0, 100), (0, 100)]
        assert playout.remaining_s() == pytest.approx(0.95)
        await playout.wait_played(limit_s=5.0)
        # ...then one chunk per 100 ms, each 400 ms ahead of what the caller hears.
        assert sends(line, t0)[3:] == [(ms, 100) for ms in range(100, 700, 100)]
        assert asyncio.get_running_loop().time() == pytest.approx(t0 + 1.0)
        assert (span.start, span.end) == pytest.approx((t0, t0 + 1.0))
        assert span.complete
        assert not playout.speaking() and playout.audio_ms_sent == pytest.approx(1000)

    paced(body, lead_s=0.4, start_s=0.2)


def test_a_hold_stops_sending_and_the_release_loses_nothing() -> None:
    async def body(playout: Playout, line: MemoryLine) -> None:
        t0 = asyncio.get_running_loop().time()
        for _ in range(10):
            await playout.send_pcm(CHUNK)
        await asyncio.sleep(0.15)
        playout.hold("barge_in")
        assert playout.held
        sent = len(sends(line, t0))
        await asyncio.sleep(0.6)  # the line plays out what it had, then falls silent
        assert len(sends(line, t0)) == sent and playout.speaking()
        playout.release("barge_in")
        await playout.wait_played(limit_s=5.0)
        assert sum(ms for _, ms in sends(line, t0)) == 1000  # every chunk, once, in order
        assert "clear" not in line.kinds()

    paced(body, lead_s=0.4, start_s=0.0)


def test_kill_clears_the_line_and_the_buffer_discard_only_the_buffer() -> None:
    async def body(playout: Playout, line: MemoryLine) -> None:
        for _ in range(10):
            await playout.send_pcm(CHUNK)
        await asyncio.sleep(0.01)
        playout.discard()  # a reply cancelled unheard: what the line has still plays
        assert playout.buffered_s == 0 and playout.speaking()
        assert playout.remaining_s() == pytest.approx(0.39, abs=0.011)
        for _ in range(3):
            await playout.send_pcm(CHUNK)
        playout.hold("speculative")
        await playout.kill()
        assert not playout.speaking() and not playout.held
        assert line.kinds() == ["play", "clear"]

    paced(body, lead_s=0.4, start_s=0.0)


def test_a_dry_line_waits_briefly_for_a_full_first_frame() -> None:
    async def body(playout: Playout, line: MemoryLine) -> None:
        t0 = asyncio.get_running_loop().time()
        await playout.send_pcm(CHUNK)  # 100 ms of a longer sentence: wait for more
        await asyncio.sleep(0.05)
        assert sends(line, t0) == []
        await playout.send_pcm(CHUNK)
        await asyncio.sleep(0)
        assert sends(line, t0) == [(50, 200)]
        await playout.wait_played(limit_s=5.0)
        span = SpokenSpan("Sure.")  # a short line: its end is known, it goes at once
        t1 = asyncio.get_running_loop().time()
        await playout.send_pcm(CHUNK[:800], span)
        playout.end_span(span)
        await asyncio.sleep(0)
        assert sends(line, t1) == [(0, 50)]
        await playout.wait_played(limit_s=5.0)
        t2 = asyncio.get_running_loop().time()
        await playout.send_pcm(CHUNK)  # more never comes: it goes after start_wait_s
        await asyncio.sleep(0.3)
        assert sends(line, t2) == [(250, 100)]

    paced(body, lead_s=0.4, start_s=0.2, start_wait_s=0.25)


def test_a_full_buffer_holds_the_producer_back() -> None:
    async def body(playout: Playout, line: MemoryLine) -> None:
        t0 = asyncio.get_running_loop().time()
        for _ in range(20):
            await playout.send_pcm(CHUNK)  # 2 s: 0.4 s goes to the line, 1 s waits here
        waited = asyncio.get_running_loop().time() - t0
        assert waited == pytest.approx(0.6)  # until 0.6 s more went out
        assert playout.buffered_s <= 1.0

    paced(body, lead_s=0.4, start_s=0.0, max_buffer_s=1.0)


def test_a_late_sender_widens_the_lead_and_it_decays_on_time() -> None:
    skew = [0.0]  # the sender's clock jumps: its loop was busy elsewhere

    async def main() -> None:
        loop = asyncio.get_running_loop()
        line = MemoryLine(8000, 100, clock=loop.time)
        playout = Playout(line, clock=lambda: loop.time() + skew[0], lead_s=0.4, start_s=0.0)
        for _ in range(30):
            await playout.send_pcm(CHUNK)
            if playout.buffered_s >= 1.0:
                break
        await asyncio.sleep(0.25)
        assert playout.late_events == 0
        skew[0] = 0.6  # woke 600 ms late: the line ran dry with audio waiting here
        await asyncio.sleep(0.15)
        assert playout.late_events == 1
        widened = playout.extra_lead_s
        assert 0.3 < widened <= 0.6
        await playout.wait_played(limit_s=10.0)
        for _ in range(30):  # the next reply, sent on time
            await playout.send_pcm(CHUNK)
        await playout.wait_played(limit_s=10.0)
        assert playout.late_events == 1  # once widened, on-time sends never run dry
        assert playout.extra_lead_s < widened  # and the extra decays
        await playout.aclose()

    run_virtual(main())


def test_a_hold_released_late_is_not_a_late_sender() -> None:
    async def body(playout: Playout, line: MemoryLine) -> None:
        for _ in range(10):
            await playout.send_pcm(CHUNK)
        await asyncio.sleep(0.05)
        playout.hold("barge_in")
        await asyncio.sleep(1.0)  # the line ran dry on purpose
        playout.release("barge_in")
        await playout.wait_played(limit_s=5.0)
        assert playout.late_events == 0

    paced(body, lead_s=0.4, start_s=0.0)


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
