"""Turn-taking figures: barge-in timing and accuracy, preemptive reply, a jittery line.

    python -m bench.turntaking bargein --trials 3      # onset -> paused / killAudio, rates
    python -m bench.turntaking preemptive --trials 5   # speech end -> first audio, on / off
    python -m bench.turntaking jitter --calls 10       # underruns inside replies, 0-150 ms
    python -m bench.turntaking vad-cpu --calls 50,200  # local VAD CPU per call-minute

Fakes, server and simulated callers run in this process (like ``bench.warm``), with the
bench's scripted provider latencies, so the server's log lines and the caller's clock
are one monotonic clock. The caller streams the espeak-ng fixtures in real time:

* ``bargein``: a long reply plays; one second in, the caller says a fixture. Backchannels
  (``fixtures/bc_*``) must leave it playing (a ``killAudio`` is a false interruption);
  real interruptions (``fixtures/int_*``, ``stop``) must cut it (none is a miss). Speech
  onset is where the fixture's speech starts (after its 0.3 s lead-in silence); *paused*
  is the server's "paused the reply" log line (needs the local VAD), *killAudio* the
  simulator's receipt.
* ``preemptive``: the caller asks a question; end of speech (the fixture's last sample
  sent) to the reply's first ``playAudio``, with ``PREEMPTIVE_REPLY`` true and false.
  The fake STT sends its final the moment its endpointing (300 ms of silence) is over;
  ``--stt-delay-ms`` holds every result back that long, as a real recogniser's latency.
* ``jitter``: whole calls on a line delaying each frame 0-150 ms (seeded); playback gaps
  under 0.3 s inside the bot's speech are underruns.
* ``vad-cpu``: the barge-in VAD alone (what each call adds), N calls at once in real
  time on one event loop: each call pushes its next 20 ms frame every 20 ms (phases
  spread over the frame), a caller who speaks a third of the time (fixtures and
  silence), for ``--seconds`` of audio. The same calls without the VAD run first: CPU
  per call-minute and the share of a core are this process's CPU with the VAD less that
  harness; also the time inside onnxruntime, windows per batch, the shared model's RSS
  and the RSS each call's detector adds.

Wall-clock figures: meaningful only on a quiet box (say so when reporting them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from audio.vad_model import LINGER_S, SileroVadModel
from audio.wav import read_wav_file
from config.settings import Settings
from server.application import create_app
from streamnode.caller_line import CallerLine
from streamnode.client import StreamNodeClient
from testkit import FakeCartesia, FakeDeepgram, FakeOpenAI, FakeProviders, llm
from testkit.http import AppServer
from testkit.providers import DEFAULT_KEYS

from .procs import Latencies
from .stats import summary

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
RATE = 8000
LEAD_IN_S = 0.3  # every fixture starts with this much digital silence
REPLY = (
    "Our branch opens at nine in the morning and closes at six in the evening. "
    "On Saturdays we open at ten and close at two in the afternoon. "
    "On Sundays and public holidays the branch stays closed all day long."
)
BACKCHANNELS = {
    "bc_hmm": "Hmm.",
    "bc_okay": "Okay.",
    "bc_uh_huh": "Uh-huh.",
    "bc_yeah": "Yeah.",
    "bc_right": "Right.",
    "bc_haan": "हाँ",
    "bc_hmm_hi": "हम्म",
    "bc_achha": "अच्छा",
    "bc_theek_hai": "हाँ, ठीक है",
    "bc_ji_haan": "जी हाँ",
}
INTERRUPTIONS = {
    "stop_8k": "Wait, stop.",
    "int_hold_on": "Hold on, that is wrong.",
    "int_no_no": "No no, I meant Sunday.",
    "int_rukiye": "रुकिए, रुकिए।",
    "int_nahin": "नहीं, मुझे रविवार चाहिए।",
}


class _Marks(logging.Handler):
    """The monotonic time of the server's turn-taking log lines, as they are emitted."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.paused: list[float] = []
        self.resumed: list[float] = []
        self.preemptive: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        now = time.monotonic()
        if message.startswith("Barge-in? paused"):
            self.paused.append(now)
        elif message.startswith("Barge-in? no"):
            self.resumed.append(now)
        elif message.startswith("Preemptive reply"):
            self.preemptive.append(message.split(":")[0])


@dataclass
class _Rig:
    fakes: FakeProviders
    url: str
    marks: _Marks
    calls: int = 0
    events: list[Any] = field(default_factory=list)


@asynccontextmanager
async def _rig(**settings: Any) -> AsyncIterator[_Rig]:
    lat = Latencies()
    fakes = FakeProviders(
        deepgram=FakeDeepgram(api_key=DEFAULT_KEYS["deepgram"]),
        openai=FakeOpenAI(
            api_key=DEFAULT_KEYS["openai"],
            first_token_ms=lat.llm_first_token_ms,
            per_token_ms=lat.llm_per_token_ms,
        ),
        cartesia=FakeCartesia(
            api_key=DEFAULT_KEYS["cartesia"],
            first_audio_ms=lat.tts_first_audio_ms,
            realtime_factor=lat.tts_realtime_factor,
        ),
    )
    marks = _Marks()
    session_log = logging.getLogger("voice.SESSION")
    session_log.addHandler(marks)
    session_log.propagate = False  # its INFO lines feed the marks, not the terminal
    try:
        async with fakes:
            values: dict[str, Any] = {k.lower(): v for k, v in fakes.env().items()}
            values.update(log_level="WARNING", greeting="Hello.", **settings)
            app = create_app(Settings(_env_file=None, **values))
            session_log.setLevel(logging.INFO)  # our marks, whatever LOG_LEVEL says
            async with AppServer(app, lifespan="on", ws="websockets-sansio") as server:
                await asyncio.wait_for(app.state.voice.greeting_warmed.wait(), 20)
                url = server.base_url.replace("http", "ws", 1) + f"/voice?sample_rate={RATE}"
                yield _Rig(fakes, url, marks)
    finally:
        session_log.removeHandler(marks)
        session_log.propagate = True


def _pcm(name: str) -> bytes:
    return read_wav_file(FIXTURES / f"{name}.wav").pcm


@asynccontextmanager
async def _call(
    rig: _Rig, *, jitter_s: float = 0.0, seed: int | None = None
) -> AsyncIterator[tuple[StreamNodeClient, CallerLine]]:
    rig.calls += 1
    async with StreamNodeClient(sample_rate=RATE, jitter_s=jitter_s, jitter_seed=seed) as node:
        await node.connect(rig.url)
        await node.send_metadata({"callid": f"tt-{rig.calls}"})
        async with CallerLine(node, RATE) as line:
            await node.wait_for("playAudio", timeout=10)
            await _quiet(node)
            yield node, line


async def _quiet(node: StreamNodeClient, limit_s: float = 30.0) -> None:
    async with asyncio.timeout(limit_s):
        while node.is_playing:  # noqa: ASYNC110
            await asyncio.sleep(max(0.02, node.playing_until - time.monotonic()))


async def _ask(rig: _Rig, node: StreamNodeClient, line: CallerLine, reply: str) -> float:
    """Ask the question fixture, get ``reply``; returns when the reply started arriving."""
    rig.fakes.deepgram.utterances.append("When are you open?")
    rig.fakes.openai.replies.append(llm.Text(reply))
    before = len(rig.fakes.openai.requests)
    line.say(_pcm("question_8k"))
    async with asyncio.timeout(15):
        while len(rig.fakes.openai.requests) <= before:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    asked = rig.fakes.openai.requests[-1].received_at
    return (await node.wait_for("playAudio", after=asked, timeout=10)).t


# --- barge-in ---------------------------------------------------------------------------


async def _barge_in_trial(rig: _Rig, fixture: str, transcript: str) -> dict[str, Any]:
    async with _call(rig) as (node, line):
        reply_at = await _ask(rig, node, line, REPLY)
        await asyncio.sleep(max(0.0, reply_at + 1.0 - time.monotonic()))
        paused_before = len(rig.marks.paused)
        rig.fakes.deepgram.utterances.append(transcript)
        line.say(_pcm(fixture))
        onset = await line.speech_start() + LEAD_IN_S
        await asyncio.sleep(3.0)
        kill = next((e for e in node.events if e.kind == "killAudio" and e.t > onset), None)
        paused = rig.marks.paused[paused_before:]
    return {
        "fixture": fixture,
        "killed": kill is not None,
        "onset_to_kill_ms": None if kill is None else round((kill.t - onset) * 1000, 1),
        "onset_to_pause_ms": round((paused[0] - onset) * 1000, 1) if paused else None,
    }


async def bargein(trials: int) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    async with _rig() as rig:
        for _ in range(trials):
            for cases, kind in ((BACKCHANNELS, "backchannel"), (INTERRUPTIONS, "interruption")):
                for fixture, transcript in cases.items():
                    row = await _barge_in_trial(rig, fixture, transcript)
                    rows.append({**row, "kind": kind})
    backs = [r for r in rows if r["kind"] == "backchannel"]
    reals = [r for r in rows if r["kind"] == "interruption"]
    pauses = [r["onset_to_pause_ms"] for r in rows if r["onset_to_pause_ms"] is not None]
    kills = [r["onset_to_kill_ms"] for r in reals if r["onset_to_kill_ms"] is not None]
    return {
        "false_interruptions": f"{sum(r['killed'] for r in backs)}/{len(backs)}",
        "missed_interruptions": f"{sum(not r['killed'] for r in reals)}/{len(reals)}",
        "onset_to_pause_ms": summary(pauses) if pauses else "no pauses (no local VAD)",
        "onset_to_kill_ms": summary(kills) if kills else None,
        "rows": rows,
    }


# --- preemptive reply --------------------------------------------------------------------


async def preemptive(trials: int, quiet_ms: int, stt_delay_ms: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for enabled in (False, True):
        latencies: list[float] = []
        async with _rig(preemptive_reply=enabled, preemptive_quiet_ms=quiet_ms) as rig:
            rig.fakes.deepgram.result_delay_ms = stt_delay_ms
            for _ in range(trials):
                async with _call(rig) as (node, line):
                    rig.fakes.deepgram.utterances.append("What time do you open tomorrow?")
                    rig.fakes.openai.replies.append(llm.Text("We open at nine."))
                    line.say(_pcm("question_8k"))
                    end = await line.said(timeout=15)
                    first = await node.wait_for("playAudio", after=end, timeout=10)
                    latencies.append(round((first.t - end) * 1000, 1))
                    await _quiet(node)
            kept = sum("kept" in m for m in rig.marks.preemptive)
            started = sum("on the interim" in m for m in rig.marks.preemptive)
        case = f"PREEMPTIVE_REPLY={str(enabled).lower()} PREEMPTIVE_QUIET_MS={quiet_ms}"
        out[f"{case}, STT results {stt_delay_ms:g} ms late"] = {
            "speech_end_to_first_audio_ms": summary(latencies),
            "speculative_started": started,
            "kept": kept,
        }
    return out


# --- jittery line -----------------------------------------------------------------------


async def jitter(calls: int, jitter_ms: float) -> dict[str, Any]:
    underruns = 0
    replies_ms = 0.0
    async with _rig() as rig:
        for seed in range(calls):
            async with _call(rig, jitter_s=jitter_ms / 1000, seed=seed) as (node, line):
                await _ask(rig, node, line, REPLY)
                await asyncio.sleep(0.5)
                await _quiet(node)
                underruns += len(node.underruns)
                replies_ms += sum(e.duration_ms for e in node.events if e.kind == "playAudio")
    return {
        "calls": calls,
        "jitter_ms": f"0-{jitter_ms:g}",
        "bot_audio_s": round(replies_ms / 1000, 1),
        "underruns": underruns,
    }


def _caller_audio(seconds: float, rate: int, offset: int, noise_dbfs: float) -> bytes:
    """A caller speaking a third of the time: fixtures between pauses, over line hiss at
    ``noise_dbfs`` (per call, shifted and seeded)."""
    names = sorted(p.stem for p in FIXTURES.glob("*_8k.wav")) + sorted(
        p.stem for p in FIXTURES.glob("bc_*.wav")
    )
    pieces: list[bytes] = []
    total = int(seconds * rate) * 2
    i = offset
    while sum(map(len, pieces)) < total:
        speech = read_wav_file(FIXTURES / f"{names[i % len(names)]}.wav").pcm
        pieces += [speech, bytes(len(speech) * 2)]
        i += 1
    pcm = np.frombuffer(b"".join(pieces)[:total], dtype="<i2").astype(np.float32)
    hiss = np.random.default_rng(offset).standard_normal(pcm.size) * 32768 * 10 ** (noise_dbfs / 20)
    return np.clip(pcm + hiss, -32768, 32767).astype("<i2").tobytes()


def vad_cpu(
    counts: Sequence[int], seconds: float, *, gate: bool, noise_dbfs: float, linger_ms: float
) -> dict[str, Any]:
    """N calls in real time on one loop, each pushing its next 20 ms frame every 20 ms
    (phases spread over the frame, as real lines are), first without the VAD (the
    harness: timers and tasks), then with it; the VAD's figures are the difference."""
    import psutil  # the bench extra

    from audio.vad import SileroVadModel

    rss = psutil.Process().memory_info().rss
    model = SileroVadModel(linger_s=linger_ms / 1000)
    model.warm((RATE,))  # onnxruntime's import and the one session, once per process
    out: dict[str, Any] = {
        "model": {"rss_mb": round((psutil.Process().memory_info().rss - rss) / 1e6, 1)}
    }
    for n in counts:
        out[f"{n} calls, quiet gate {'on' if gate else 'off'}"] = asyncio.run(
            _vad_cpu(model, n, seconds, gate=gate, noise_dbfs=noise_dbfs)
        )
    return out


async def _vad_cpu(
    model: SileroVadModel, n: int, seconds: float, *, gate: bool, noise_dbfs: float
) -> dict[str, Any]:
    import psutil  # the bench extra

    from audio.vad import VoiceActivityDetector
    from pipeline.call.inbox import QUIET_DBFS
    from pipeline.turntaking.config import TurnTakingConfig

    process = psutil.Process()
    settings = TurnTakingConfig().vad
    audio = [_caller_audio(seconds, RATE, k, noise_dbfs) for k in range(n)]
    frame = RATE * 2 // 50
    quiet = QUIET_DBFS if gate else None

    async def line(k: int, detector: VoiceActivityDetector | None, start: float) -> int:
        events = 0
        pcm = audio[k]
        for i, at in enumerate(range(0, len(pcm), frame)):
            await asyncio.sleep(max(0.0, start + i * 0.02 - time.perf_counter()))
            if detector is not None:
                events += len(await detector.push(pcm[at : at + frame]))
        return events

    async def run(detectors: list[VoiceActivityDetector | None]) -> tuple[float, float, int]:
        start = time.perf_counter() + 0.1
        cpu0, wall0 = time.process_time(), time.perf_counter()
        events = await asyncio.gather(
            *(line(k, d, start + 0.02 * k / n) for k, d in enumerate(detectors))
        )
        return time.process_time() - cpu0, time.perf_counter() - wall0, sum(events)

    harness_cpu, _, _ = await run([None] * n)
    rss1 = process.memory_info().rss
    detectors = [VoiceActivityDetector(model, RATE, settings, quiet_dbfs=quiet) for _ in range(n)]
    runs0, windows0, busy0 = model.runs, model.windows, model.busy_s
    cpu, wall, events = await run(list(detectors))
    rss2 = process.memory_info().rss
    scored = sum(d.scored for d in detectors)
    for detector in detectors:
        detector.close()
    await model.aclose()
    runs = model.runs - runs0
    net = cpu - harness_cpu
    call_minutes = n * seconds / 60
    return {
        "audio_s_per_call": seconds,
        "cpu_s_per_call_minute": round(net / call_minutes, 3),
        "core_share_at_real_time": f"{net / seconds * 100:.0f}%",
        "harness_cpu_s_per_call_minute": round(harness_cpu / call_minutes, 3),
        "onnx_s_per_call_minute": round((model.busy_s - busy0) / call_minutes, 3),
        "wall_s": round(wall, 1),
        "speech_events": events,
        "windows_scored": f"{scored}/{sum(int(d.position_ms // 32) for d in detectors)}",
        "runs": runs,
        "windows_per_run": round((model.windows - windows0) / runs, 1) if runs else 0,
        "rss_kb_per_call": round((rss2 - rss1) / n / 1e3, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.turntaking")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("bargein").add_argument("--trials", type=int, default=3)
    pre = sub.add_parser("preemptive")
    pre.add_argument("--trials", type=int, default=5)
    pre.add_argument("--quiet-ms", type=int, default=Settings().turn.preemptive_quiet_ms)
    pre.add_argument(
        "--stt-delay-ms", type=float, default=0.0, help="the fake STT's result latency"
    )
    cpu = sub.add_parser("vad-cpu")
    cpu.add_argument("--calls", default="50,200")
    cpu.add_argument("--seconds", type=float, default=30.0, help="of audio per call")
    cpu.add_argument("--line-noise-dbfs", type=float, default=-65.0, help="hiss under it all")
    cpu.add_argument("--linger-ms", type=float, default=LINGER_S * 1000, help="batch wait")
    cpu.add_argument("--gate", choices=("both", "on", "off"), default="both")
    jit = sub.add_parser("jitter")
    jit.add_argument("--calls", type=int, default=10)
    jit.add_argument("--jitter-ms", type=float, default=150.0)
    args = parser.parse_args(argv)
    if args.command == "bargein":
        result = asyncio.run(bargein(args.trials))
    elif args.command == "preemptive":
        result = asyncio.run(preemptive(args.trials, args.quiet_ms, args.stt_delay_ms))
    elif args.command == "vad-cpu":
        counts = [int(n) for n in args.calls.split(",")]
        gates = {"both": (False, True), "on": (True,), "off": (False,)}[args.gate]
        result = {}
        for gate in gates:
            figures = vad_cpu(
                counts,
                args.seconds,
                gate=gate,
                noise_dbfs=args.line_noise_dbfs,
                linger_ms=args.linger_ms,
            )
            for key, value in figures.items():
                result.setdefault(key, value)  # the model's RSS: the first load's
    else:
        result = asyncio.run(jitter(args.calls, args.jitter_ms))
    print(json.dumps(result, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
