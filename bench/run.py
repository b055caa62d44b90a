"""One benchmark run: fakes, server and callers as three processes, watched from a fourth.

``run_once`` returns the JSON-ready result and writes it to ``bench/results/``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from streamnode.client import StreamNodeClient

from . import procs
from .join import figures
from .monitor import Monitor, process_tree_usage
from .stats import percentile, summary

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class RunConfig:
    calls: int
    seconds: float  # each slot's busy time
    ramp: float = 5.0
    call_seconds: float = 0.0  # 0 = one call per slot (load); else back-to-back calls (soak)
    fast_loop: bool = True  # uvicorn --loop uvloop --http httptools
    log_level: str = "INFO"
    barge_every: int = 3
    profile_s: float = 0.0  # py-spy the server for this long in the middle of the run
    label: str = ""
    nice: int = 0  # applied to the three processes (e.g. -5 on a box shared with other work)
    server_root: str = ""  # another source tree for the server (A/B a patch); "" = this one
    workers: int = 1  # > 1: `voice-agent serve --workers N` instead of one uvicorn process
    server_env: tuple[tuple[str, str], ...] = ()  # extra settings, e.g. CARTESIA_TRANSPORT
    latencies: procs.Latencies = field(default_factory=procs.Latencies)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": psutil.cpu_count(logical=True),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


async def _cold_call(url: str) -> float | None:
    async with StreamNodeClient(keep_audio=False) as node:
        await node.connect(url)
        sent = await node.send_metadata({"callid": "bench-cold"})
        try:
            event = await node.wait_for("playAudio", timeout=15)
        except TimeoutError:
            return None
        return (event.t - sent) * 1000


def _wait_cached(port: int, timeout_s: float = 15.0) -> int:
    deadline = time.monotonic() + timeout_s
    cached = 0
    while time.monotonic() < deadline:
        cached = int(httpx.get(f"http://127.0.0.1:{port}/health").json()["cached_lines"])
        if cached:
            return cached
        time.sleep(0.1)
    return cached


def _profile(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    py_spy = Path(sys.executable).with_name("py-spy")
    argv = [
        str(py_spy),
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(int(seconds)),
        "--format",
        "raw",
        "--nonblocking",
        "--rate",
        "100",
        "-o",
        str(out),
    ]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_once(cfg: RunConfig) -> dict[str, Any]:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"{stamp}-{cfg.label or 'load'}-{cfg.calls}"
    logs = RESULTS / "logs" / name
    logs.mkdir(parents=True, exist_ok=True)
    port = procs.free_port()
    url = f"ws://127.0.0.1:{port}/voice"
    max_records = max(500, cfg.calls * (4 if cfg.call_seconds else 2) * 4)
    with procs.fakes(cfg.latencies, logs / "fakes.log", max_records) as (fakes_pid, env):
        # Admission control (MAX_CALLS) is the server's; the bench measures past it.
        server_env = {**env, "LOG_LEVEL": cfg.log_level, "MAX_CALLS": str(4 * cfg.calls + 50)}
        server_env.update(dict(cfg.server_env))
        root = Path(cfg.server_root) if cfg.server_root else procs.ROOT
        log = logs / "server.log"
        with procs.server(server_env, log, port, cfg.fast_loop, root, cfg.workers) as server:
            procs.wait_healthy(port)
            cached_at_cold = int(
                httpx.get(f"http://127.0.0.1:{port}/health").json()["cached_lines"]
            )
            cold_ms = asyncio.run(_cold_call(url))
            _wait_cached(port)
            time.sleep(1.0)
            _, base = process_tree_usage(server.pid)  # every worker, like the monitor
            out = logs / "callers.json"
            argv = [
                procs.PYTHON,
                "-m",
                "bench.callers",
                "--url",
                url,
                "--calls",
                str(cfg.calls),
                "--ramp",
                str(cfg.ramp),
                "--seconds",
                str(cfg.seconds),
                "--call-seconds",
                str(cfg.call_seconds),
                "--barge-every",
                str(cfg.barge_every),
                "--out",
                str(out),
            ]
            with procs.managed(argv, os.environ, logs / "callers.log") as callers:
                pids = {"server": server.pid, "fakes": fakes_pid, "callers": callers.pid}
                if cfg.nice:
                    for pid in pids.values():
                        psutil.Process(pid).nice(cfg.nice)
                fakes_url = env["OPENAI_BASE_URL"].removesuffix("/v1") + "/_fake/timeline?limit=0"
                with Monitor(pids, f"http://127.0.0.1:{port}/health", fakes_url) as mon:
                    prof = None
                    if cfg.profile_s:
                        time.sleep(cfg.ramp + 2)
                        prof = _profile(server.pid, cfg.profile_s, logs / "profile.txt")
                    callers.wait(cfg.ramp + cfg.seconds + 120)
                    if prof is not None:
                        prof.wait(60)
                if callers.returncode != 0:
                    raise RuntimeError(f"callers failed ({callers.returncode}); see {logs}")
            raw = json.loads(out.read_text())
            timeline = httpx.get(
                env["OPENAI_BASE_URL"].removesuffix("/v1") + "/_fake/timeline",
                params={"limit": max_records},
                timeout=60,
            ).json()
            (logs / "timeline.json").write_text(json.dumps(timeline))
    result = _result(cfg, raw, timeline["stt"], mon, base, cold_ms, cached_at_cold)
    result["fakes_lag_ms"] = fakes_lag(timeline, cfg.latencies)
    result["name"] = name
    if cfg.profile_s:
        result["profile"] = str((logs / "profile.txt").relative_to(RESULTS.parent.parent))
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1))
    return result


def fakes_lag(timeline: dict[str, Any], lat: procs.Latencies) -> dict[str, Any]:
    """How late the fakes themselves were against their script (counted in the overhead)."""
    llm = [
        (r["first_byte_at"] - r["received_at"]) * 1000 - lat.llm_first_token_ms
        for r in timeline["llm"]
        if r["first_byte_at"] is not None
    ]
    tts = [
        (r["first_chunk_at"] - r["received_at"]) * 1000 - lat.tts_first_audio_ms
        for r in timeline["tts"]
        if r["first_chunk_at"] is not None
    ]
    return {"llm_first_token": summary(llm), "tts_first_audio": summary(tts)}


def _result(
    cfg: RunConfig,
    raw: dict[str, Any],
    stt: list[dict[str, Any]],
    mon: Monitor,
    base_rss: float,
    cold_ms: float | None,
    cached_at_cold: int,
) -> dict[str, Any]:
    calls: list[dict[str, Any]] = raw["calls"]
    began, ended = float(raw["began"]), float(raw["ended"])
    steady0, steady1 = began + cfg.ramp, began + cfg.seconds
    samples = figures(calls, stt, cfg.latencies)
    matched = int(samples.pop("_matched_calls")[0])
    failed = [c for c in calls if c["error"] or c["greeting_first_play"] is None]
    call_minutes = sum((c["ended_at"] - c["started_at"]) for c in calls) / 60
    cpu_s, _, wall = mon.window("server", began, ended + 1)
    _, peak_rss, _ = mon.window("server", steady0, max(steady1, steady0 + 1))
    lag = [ms for t, ms in mon.health_ms if steady0 <= t <= steady1] or [
        ms for _, ms in mon.health_ms
    ]
    others: dict[str, Any] = {}
    host = mon.host_cpu_percent(began, ended)
    others["host_cpu_percent"] = None if host is None else round(host, 1)
    others["fakes_loop_lag_probe_ms"] = summary(
        [ms for t, ms in mon.fakes_ms if steady0 <= t <= steady1]
    )
    others["callers_loop_lag_ms"] = summary(raw.get("loop_lag_ms", []))
    for name in ("fakes", "callers"):
        c, r, w = mon.window(name, began, ended)
        others[name] = {
            "cpu_percent": round(100 * c / w, 1) if w else None,
            "peak_rss_mb": round(r, 1),
        }
    rss_series = [
        (round(s.t - began, 1), round(s.rss_mb, 2), round(s.cpu_s, 2))
        for s in mon.watches["server"].samples
    ]
    steady_cpu, _, steady_wall = mon.window("server", steady0, steady1)
    return {
        "config": {**asdict(cfg), "latencies": asdict(cfg.latencies)},
        "machine": machine(),
        "calls": {
            "concurrent": cfg.calls,
            "total": len(calls),
            "failed": len(failed),
            "errors": sorted({c["error"] for c in failed if c["error"]})[:10],
            "matched_to_stt": matched,
            "turns": sum(len(c["turns"]) for c in calls),
            "barge_ins": sum(len(c["barge_ins"]) for c in calls),
            "late_plays": sum(c["late_plays"] for c in calls),
            "plays": sum(c["plays"] for c in calls),
            "problems": sum(len(c["problems"]) for c in calls),
            "caller_max_send_lag_ms": round(
                max((c["max_send_lag_ms"] for c in calls), default=0), 1
            ),
            "call_minutes": round(call_minutes, 2),
        },
        "greeting_cold_ms": None if cold_ms is None else round(cold_ms, 2),
        "greeting_cold_cache_lines": cached_at_cold,
        "figures_ms": {k: summary(v) for k, v in samples.items()},
        "server": {
            "cpu_s": round(cpu_s, 2),
            "cpu_percent": round(100 * cpu_s / wall, 1) if wall else None,
            "cpu_percent_steady": round(100 * steady_cpu / steady_wall, 1) if steady_wall else None,
            "cpu_s_per_call_minute": round(cpu_s / call_minutes, 4) if call_minutes else None,
            "rss_idle_mb": round(base_rss, 1),
            "rss_peak_mb": round(peak_rss, 1),
            "rss_per_call_mb": round((peak_rss - base_rss) / cfg.calls, 3),
            "loop_lag_probe_ms": summary(lag),
            "loop_lag_probe_p999_ms": percentile(lag, 99.9),
            "health_failures": mon.health_failures,
            "series_t_rss_mb_cpu_s": rss_series,
        },
        "others": others,
    }


def rejoin(path: Path) -> bool:
    """Recompute a result's figures from its saved logs (after a fix to the join)."""
    result = json.loads(path.read_text())
    logs = RESULTS / "logs" / result["name"]
    if not (logs / "callers.json").exists() or not (logs / "timeline.json").exists():
        return False
    calls = json.loads((logs / "callers.json").read_text())["calls"]
    timeline = json.loads((logs / "timeline.json").read_text())
    lat = procs.Latencies(**result["config"]["latencies"])
    samples = figures(calls, timeline["stt"], lat)
    result["calls"]["matched_to_stt"] = int(samples.pop("_matched_calls")[0])
    result["figures_ms"] = {k: summary(v) for k, v in samples.items()}
    result["fakes_lag_ms"] = fakes_lag(timeline, lat)
    path.write_text(json.dumps(result, indent=1))
    return True
