"""The keyless local stack, measured: one command, a JSON result and a markdown table.

    .venv/bin/python -m bench.keyless                 # ~6-8 minutes on 2 cores
    .venv/bin/python -m bench.keyless --levels 1,2,4 --rounds 1 --label quick

1. The models alone, in this process: Moonshine's real-time factor on the speech fixtures
   (CPU-bound, so wall time ~ CPU time x threads), Piper's time to first audio for the
   example agent's answers (first clause, as the call renders it), silero's cost per window.
2. A real keyless server (``voice-agent serve``, no keys, LOG_LEVEL=WARNING) in its own
   process; simulated callers (this process) greet, wait out the greeting, then ask the
   utterances one after another, each time waiting until the answer has been played out,
   as a caller would. Per concurrency level: end of caller speech -> first reply audio
   (p50/p95), the server's CPU per call-minute, its RSS at start and at the level's peak.
   "Serves N calls" = the largest level whose reply p95 stays under 2 s.

The caller side shares the box with the server; run it on a quiet machine for figures to
compare (the result records the load average before and after).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

from audio.wav import read_wav_file
from bench.procs import ROOT, free_port, managed
from bench.stats import percentile, summary
from streamnode.caller_line import CallerLine
from streamnode.client import CallEnded, StreamNodeClient

FIXTURES = ROOT / "fixtures"
RESULTS = ROOT / "bench" / "results"  # keyless runs go to results/keyless/: another schema
VOICE_AGENT = Path(sys.executable).with_name("voice-agent")
UTTERANCES = ("ask_hours.wav", "question.wav", "hello.wav", "stop_question.wav")
REPLY_BAR_MS = 2000.0
WAIT_S = 60.0


# --- 1. the models alone ----------------------------------------------------------------


def measure_models(runs: int = 3) -> dict[str, Any]:
    from agents import EXAMPLE
    from audio.resample import resample
    from audio.vad import SileroVadModel, VoiceActivityDetector
    from pipeline.agent_file import load_agent_file
    from pipeline.providers.moonshine_model import MoonshineModel
    from pipeline.providers.piper_tts import PiperVoiceModel, clauses

    stt = MoonshineModel.shared()
    stt.warm()
    rtf: list[float] = []
    for name in (*UTTERANCES, "ask_hours_8k.wav", "ask_person.wav"):
        wav = read_wav_file(FIXTURES / name)
        for _ in range(runs):
            started = time.perf_counter()
            stt.transcribe_pcm(wav.pcm, wav.sample_rate)
            rtf.append((time.perf_counter() - started) / wav.duration_s)
    voice = PiperVoiceModel.shared()
    voice.warm()
    first_audio: list[float] = []
    tts_rtf: list[float] = []
    for entry in load_agent_file(EXAMPLE).faq:
        sentence = entry.answer.split(". ")[0]
        for _ in range(runs):
            started = time.perf_counter()
            pcm = next(voice.sentences(clauses(sentence)[0]))
            resample(pcm, voice.sample_rate, 16000)
            elapsed = time.perf_counter() - started
            first_audio.append(elapsed * 1000)
            tts_rtf.append(elapsed / (len(pcm) / (voice.sample_rate * 2)))
    vad_model = SileroVadModel.shared()
    vad_model.warm()
    detector = VoiceActivityDetector(vad_model, 16000)
    pcm = read_wav_file(FIXTURES / "hello.wav").pcm * 4
    started = time.process_time()
    asyncio.run(detector.push(pcm))  # one call alone: every window is a batch of one
    vad_us = (time.process_time() - started) / (detector.position_ms / 32) * 1e6
    detector.close()
    return {
        "stt_rtf": {"p50": _r(percentile(rtf, 50), 3), "p95": _r(percentile(rtf, 95), 3)},
        "tts_first_audio_ms": summary(first_audio),
        "tts_rtf_p50": _r(percentile(tts_rtf, 50), 3),
        "vad_cpu_us_per_32ms_window": round(vad_us, 1),
    }


def _r(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


# --- 2. calls against a real keyless server -----------------------------------------------


def tree_rss(proc: psutil.Process) -> int:
    """The server's RSS plus its children's (Moonshine runs in a child process)."""
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.Error):  # a recycled child that just exited
            total += child.memory_info().rss
    return total


def tree_cpu_s(proc: psutil.Process) -> float:
    """CPU seconds of the server, its live children and its reaped ones."""
    times = proc.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            child_times = child.cpu_times()
            total += child_times.user + child_times.system
    return total


class RssSampler:
    """The server's peak RSS (with children) while a level runs, sampled every 0.25 s."""

    def __init__(self, proc: psutil.Process) -> None:
        self._proc = proc
        self.peak = tree_rss(proc)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self.peak = max(self.peak, tree_rss(self._proc))


async def one_call(url: str, delay_s: float, rounds: int) -> dict[str, Any]:
    await asyncio.sleep(delay_s)
    latencies: list[float] = []
    missed = 0
    started = time.monotonic()
    async with StreamNodeClient(sample_rate=16000, keep_audio=False) as node:
        await node.connect(url)
        await node.send_metadata({"callid": f"sim-{secrets.token_hex(8)}"})
        await node.wait_for("playAudio", timeout=WAIT_S)
        async with CallerLine(node, 16000) as line:
            await _played_out(node)
            for name in UTTERANCES * rounds:
                line.say(read_wav_file(FIXTURES / name).pcm)
                spoken_at = await line.said(timeout=WAIT_S)
                try:
                    reply = await node.wait_for("playAudio", after=spoken_at, timeout=WAIT_S)
                except (TimeoutError, CallEnded):
                    missed += 1
                    if node.finished:
                        break  # the server ended the call (e.g. after failed turns)
                    continue
                latencies.append((reply.t - spoken_at) * 1000)
                await node.wait_for_quiet(1.0, timeout=WAIT_S)
                await _played_out(node)
                if node.finished:
                    break
    return {"latencies_ms": latencies, "missed": missed, "seconds": time.monotonic() - started}


async def _played_out(node: StreamNodeClient) -> None:
    # The playback clock is a computed deadline, not an event: sleep until it passes.
    while node.is_playing:  # noqa: ASYNC110
        await asyncio.sleep(max(0.02, node.playing_until - time.monotonic()))


async def run_level(url: str, calls: int, rounds: int) -> list[dict[str, Any]]:
    stagger = 2.0 / max(1, calls)  # callers do not all speak in the same 20 ms
    return await asyncio.gather(*(one_call(url, i * stagger, rounds) for i in range(calls)))


def serve_and_measure(levels: Sequence[int], rounds: int, workdir: Path) -> dict[str, Any]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    env.update({"LOG_LEVEL": "WARNING", "MAX_CALLS": "64", "PYTHONUNBUFFERED": "1"})
    for stage in ("STT", "LLM", "TTS"):
        env[f"{stage}_PROVIDER"] = "local"
    argv = [str(VOICE_AGENT), "serve", "--host", "127.0.0.1", "--port", str(port)]
    url = f"ws://127.0.0.1:{port}/voice"
    out: dict[str, Any] = {"levels": []}
    with managed(argv, env, workdir / "keyless-server.log", cwd=workdir) as child:
        proc = psutil.Process(child.pid)
        started = time.monotonic()
        _wait_ready(port)
        out["ready_s"] = round(time.monotonic() - started, 1)
        _wait_cached(port)  # the fixed lines finish caching in the background
        out["rss_start_mb"] = round(tree_rss(proc) / 2**20, 1)
        for calls in levels:
            cpu_before = tree_cpu_s(proc)
            with RssSampler(proc) as rss:
                results = asyncio.run(run_level(url, calls, rounds))
            cpu_s = tree_cpu_s(proc) - cpu_before
            latencies = [ms for r in results for ms in r["latencies_ms"]]
            call_minutes = sum(r["seconds"] for r in results) / 60
            level = {
                "calls": calls,
                "reply_ms": summary(latencies),
                "missed_replies": sum(r["missed"] for r in results),
                "cpu_s_per_call_minute": round(cpu_s / call_minutes, 2),
                "rss_peak_mb": round(rss.peak / 2**20, 1),
                "rss_per_call_mb": round((rss.peak / 2**20 - out["rss_start_mb"]) / calls, 1),
            }
            level["rss_after_mb"] = round(tree_rss(proc) / 2**20, 1)
            print(json.dumps(level), flush=True)
            out["levels"].append(level)
        out["health"] = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json()["local"]
    under = [
        lv["calls"]
        for lv in out["levels"]
        if lv["missed_replies"] == 0 and (lv["reply_ms"]["p95"] or 1e9) <= REPLY_BAR_MS
    ]
    out["calls_under_2s"] = max(under, default=0)
    return out


def _wait_cached(port: int, timeout_s: float = 120.0) -> None:
    """Until /health's cached_lines stops growing (the start-up TTS work is over)."""
    deadline = time.monotonic() + timeout_s
    last, stable_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        cached = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json()["cached_lines"]
        if cached != last:
            last, stable_since = cached, time.monotonic()
        elif time.monotonic() - stable_since >= 3.0:
            return
        time.sleep(0.5)


def _wait_ready(port: int, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the keyless server was not ready within {timeout_s:.0f} s")


# --- report ---------------------------------------------------------------------------------


def markdown(result: dict[str, Any]) -> str:
    models, calls = result["models"], result["calls"]
    lines = [
        f"Run {result['name']} (load average before/after: {result['load_before']} / "
        f"{result['load_after']}); server ready {calls['ready_s']} s after start, "
        f"RSS {calls['rss_start_mb']} MB once warm.",
        "",
        f"- Moonshine real-time factor (one at a time): p50 {models['stt_rtf']['p50']}, "
        f"p95 {models['stt_rtf']['p95']}",
        f"- Piper first audio of an answer's first clause: p50 "
        f"{models['tts_first_audio_ms']['p50']} ms, p95 {models['tts_first_audio_ms']['p95']} ms"
        f" (real-time factor p50 {models['tts_rtf_p50']})",
        f"- silero VAD: {models['vad_cpu_us_per_32ms_window']} µs CPU per 32 ms window",
        f"- simultaneous calls with reply p95 under 2 s: **{calls['calls_under_2s']}**",
        "",
        "| calls | replies | end of speech -> first reply audio p50 / p95 / max | missed "
        "| server CPU s per call-minute | RSS peak | RSS per call |",
        "|---|---|---|---|---|---|---|",
    ]
    for lv in calls["levels"]:
        ms = lv["reply_ms"]
        lines.append(
            f"| {lv['calls']} | {ms['n']} | {ms['p50']} / {ms['p95']} / {ms['max']} ms "
            f"| {lv['missed_replies']} | {lv['cpu_s_per_call_minute']} | {lv['rss_peak_mb']} MB "
            f"| {lv['rss_per_call_mb']} MB |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.keyless", description=__doc__)
    parser.add_argument("--levels", default="1,2,4,6", help="simultaneous calls per level")
    parser.add_argument("--rounds", type=int, default=2, help="times each call asks the set")
    parser.add_argument("--label", default="keyless")
    args = parser.parse_args(argv)
    levels = [int(n) for n in args.levels.split(",") if n.strip()]
    name = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{args.label}"
    workdir = RESULTS / "logs" / name
    workdir.mkdir(parents=True, exist_ok=True)
    load_before = [round(x, 2) for x in os.getloadavg()]
    models = measure_models()
    print(json.dumps(models), flush=True)
    calls = serve_and_measure(levels, args.rounds, workdir)
    result = {
        "name": name,
        "kind": "keyless",
        "load_before": load_before,
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
        "models": models,
        "calls": calls,
    }
    (RESULTS / "keyless").mkdir(exist_ok=True)
    (RESULTS / "keyless" / f"{name}.json").write_text(json.dumps(result, indent=1))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
