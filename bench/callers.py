"""The simulated callers: their own process, ``python -m bench.callers ...``.

Each call: connect, metadata, greeting, then turns until its time is up: say an
utterance, wait for the reply's first ``playAudio``; every ``--barge-every``-th reply is
interrupted 400 ms into its playback with a short "stop" utterance. Times are
``time.monotonic()`` (host-wide on Linux), joined later with the fake STT's timeline.
Writes one JSON object: ``{"calls": [...]}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from streamnode.call import load_caller_audio
from streamnode.caller_line import CallerLine
from streamnode.client import CallEnded, ReceivedEvent, StreamNodeClient

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SAMPLE_RATE = 16000
REPLY_TIMEOUT_S = 15.0


@dataclass
class TurnRecord:
    speech_start: float | None
    speech_end: float
    first_play: float | None = None
    barge: bool = False  # this utterance interrupted the previous reply


@dataclass
class BargeRecord:
    speech_start: float | None  # first frame of the interrupting utterance on the wire
    kill_at: float | None = None


@dataclass
class CallRecord:
    slot: int
    index: int
    started_at: float
    metadata_sent_at: float | None = None
    greeting_first_play: float | None = None
    turns: list[TurnRecord] = field(default_factory=list)
    barge_ins: list[BargeRecord] = field(default_factory=list)
    plays: int = 0
    late_plays: int = 0  # a reply chunk arriving after the node's queue ran dry
    problems: list[str] = field(default_factory=list)
    error: str | None = None
    ended_at: float | None = None
    closed_by_server: bool = False
    max_send_lag_ms: float = 0.0


class _PlayWatch:
    """Counts chunks that arrive after playback ran dry, within one reply."""

    def __init__(self, record: CallRecord) -> None:
        self._record = record
        self.in_reply = False

    def __call__(self, event: ReceivedEvent) -> None:
        if event.kind == "playAudio":
            self._record.plays += 1
            if self.in_reply and event.play_start is not None and event.play_start <= event.t:
                self._record.late_plays += 1
            self.in_reply = True
        elif event.kind == "killAudio":
            self.in_reply = False


async def one_call(
    url: str, slot: int, index: int, seconds: float, speech: dict[str, bytes], barge_every: int
) -> CallRecord:
    rng = random.Random(slot * 1000 + index)
    record = CallRecord(slot=slot, index=index, started_at=time.monotonic())
    watch = _PlayWatch(record)
    node = StreamNodeClient(sample_rate=SAMPLE_RATE, keep_audio=False, on_event=watch)
    line = CallerLine(node, SAMPLE_RATE)
    deadline = record.started_at + seconds
    try:
        await node.connect(url)
        record.metadata_sent_at = await node.send_metadata(
            {
                "callid": f"bench-{slot}-{index}",
                "virtual_number": "+910000000000",
                "customer_number": f"+91{slot:010d}",
                "call_type": "inbound",
            }
        )
        line.start()
        greeting = await node.wait_for("playAudio", timeout=REPLY_TIMEOUT_S)
        record.greeting_first_play = greeting.t
        await _quiet(node, rng)
        turn = 0
        while time.monotonic() + 4.0 < deadline and not node.closed:
            turn += 1
            line.say(speech["turn"])
            end = await line.said(timeout=10)
            rec = TurnRecord(line.speech_started_at, end)
            record.turns.append(rec)
            watch.in_reply = False
            reply = await node.wait_for("playAudio", after=end, timeout=REPLY_TIMEOUT_S)
            rec.first_play = reply.t
            if barge_every and turn % barge_every == 0 and time.monotonic() + 4.0 < deadline:
                await asyncio.sleep(0.4)
                line.say(speech["barge"])
                barge = BargeRecord(await line.speech_start(timeout=10))
                record.barge_ins.append(barge)
                kill = await node.wait_for("killAudio", after=reply.t, timeout=REPLY_TIMEOUT_S)
                barge.kill_at = kill.t
                end = await line.said(timeout=10)
                rec = TurnRecord(barge.speech_start, end, barge=True)
                record.turns.append(rec)
                watch.in_reply = False
                reply = await node.wait_for("playAudio", after=end, timeout=REPLY_TIMEOUT_S)
                rec.first_play = reply.t
            await _quiet(node, rng)
        while time.monotonic() < deadline and not node.closed:  # noqa: ASYNC110
            await asyncio.sleep(min(0.5, deadline - time.monotonic()))
    except (TimeoutError, CallEnded, OSError) as exc:
        record.error = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # a bug or protocol error fails this call, not the run
        record.error = f"{type(exc).__name__}: {exc}"
    finally:
        record.closed_by_server = node.closed_by_server
        await line.stop()
        try:
            await node.close()
        except Exception as exc:
            record.problems.append(f"close: {exc!r}")
        record.ended_at = time.monotonic()
        record.max_send_lag_ms = round(line.max_lag_ms, 2)
        record.problems.extend(node.problems)
    return record


async def _quiet(node: StreamNodeClient, rng: random.Random) -> None:
    """Listen to the bot until it is done, then think for a moment."""
    while node.is_playing:  # noqa: ASYNC110
        await asyncio.sleep(max(0.02, node.playing_until - time.monotonic()))
    await asyncio.sleep(rng.uniform(0.3, 1.2))


async def slot_loop(
    url: str,
    slot: int,
    start_at: float,
    until: float,
    call_s: float,
    speech: dict[str, bytes],
    barge_every: int,
) -> list[CallRecord]:
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    records: list[CallRecord] = []
    index = 0
    while True:
        seconds = min(call_s, until - time.monotonic())
        if seconds < 5.0 and records:
            return records
        records.append(await one_call(url, slot, index, max(seconds, 5.0), speech, barge_every))
        index += 1


async def _watch_lag(samples: list[float], period_s: float = 0.05) -> None:
    """This process's own event-loop lag: late receive times inflate every figure."""
    while True:
        started = time.monotonic()
        await asyncio.sleep(period_s)
        samples.append((time.monotonic() - started - period_s) * 1000)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    speech = {
        "turn": load_caller_audio(FIXTURES / args.turn_wav, SAMPLE_RATE)[0],
        "barge": load_caller_audio(FIXTURES / args.barge_wav, SAMPLE_RATE)[0],
    }
    began = time.monotonic()
    until = began + args.ramp + args.seconds
    step = args.ramp / max(1, args.calls)
    slots = [
        slot_loop(
            args.url,
            i,
            began + i * step,
            until,
            args.call_seconds or args.seconds,
            speech,
            args.barge_every,
        )
        for i in range(args.calls)
    ]
    lag: list[float] = []
    watcher = asyncio.create_task(_watch_lag(lag))
    results = await asyncio.gather(*slots)
    watcher.cancel()
    calls = [asdict(r) for records in results for r in records]
    return {"began": began, "ended": time.monotonic(), "calls": calls, "loop_lag_ms": lag}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.callers")
    p.add_argument("--url", required=True)
    p.add_argument("--calls", type=int, required=True)
    p.add_argument("--ramp", type=float, default=5.0, help="seconds over which calls start")
    p.add_argument("--seconds", type=float, required=True, help="each slot's busy time")
    p.add_argument("--call-seconds", type=float, default=0.0, help="0 = one call per slot")
    p.add_argument("--barge-every", type=int, default=3)
    p.add_argument("--turn-wav", default="question.wav")
    p.add_argument("--barge-wav", default="stop.wav")
    p.add_argument("--out", type=Path, required=True)
    return p


def main() -> int:
    args = _parser().parse_args()
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        result = runner.run(run(args))
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
