"""``python -m bench abuse``: the abuse run from outside, on loopback, bounded in count and time.

Processes: the provider fakes, the real server (``voice-agent serve`` with a stream token
and an admin token, default limits), the honest callers and the attackers
(:mod:`bench.abuse_roles`), all watched from this one (CPU and RSS with psutil). Steps:

1. the honest calls alone: the baseline latencies;
2. the attackers start (idle sockets, bad-token flood, huge POSTs, fast callers);
3. a few seconds in, the same honest calls again, while the attack runs.

Prints a Markdown summary (the table in docs/reliability.md) and writes the JSON result
to ``bench/results/<stamp>-abuse.json``, server log alongside in ``results/logs``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from . import procs
from .monitor import Monitor
from .run import RESULTS, machine
from .stats import summary

TOKEN = "bench-abuse-stream-token-4Xq9Lp2Wz7"
ADMIN = "bench-abuse-admin-token-8Rk3Nv6Ht1"


@dataclass(frozen=True)
class AbuseConfig:
    honest_calls: int = 10
    honest_spacing_s: float = 0.3
    honest_delay_s: float = 4.0  # after the attack starts
    idle: int = 500
    idle_addresses: int = 10
    idle_seconds: float = 30.0  # workers reconnect when closed or refused, this long
    bad_per_s: float = 200.0
    bad_seconds: float = 10.0
    bad_addresses: int = 4
    post_mib: int = 100
    fast: int = 20
    fast_speedup: float = 10.0
    fast_seconds: float = 20.0
    fast_addresses: int = 5
    label: str = "abuse"


def _role(role: str, cfg: dict[str, Any], logs: Path, name: str) -> subprocess.Popen[bytes]:
    config = logs / f"{name}-config.json"
    config.write_text(json.dumps(cfg))
    out = (logs / f"{name}.log").open("wb")
    return subprocess.Popen(
        [procs.PYTHON, "-m", "bench.abuse_roles", role, str(config), str(logs / f"{name}.json")],
        cwd=procs.ROOT,
        stdout=out,
        stderr=subprocess.STDOUT,
    )


def _finish(proc: subprocess.Popen[bytes], logs: Path, name: str, timeout_s: float) -> Any:
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        raise RuntimeError(f"{name} did not finish in {timeout_s:.0f} s; see {logs}") from None
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed ({proc.returncode}); see {logs / f'{name}.log'}")
    return json.loads((logs / f"{name}.json").read_text())


def _wait_ready(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server on port {port} not ready after {timeout_s:.0f} s")


def run_abuse(cfg: AbuseConfig) -> dict[str, Any]:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"{stamp}-{cfg.label}"
    logs = RESULTS / "logs" / name
    logs.mkdir(parents=True, exist_ok=True)
    port = procs.free_port()
    ws, http_url = f"ws://127.0.0.1:{port}/voice", f"http://127.0.0.1:{port}"
    voice_agent = str(Path(procs.PYTHON).with_name("voice-agent"))
    with procs.fakes(procs.Latencies(), logs / "fakes.log", 2000) as (fakes_pid, env):
        server_env = {
            **os.environ,
            **env,
            "VOICE_WS_TOKEN": TOKEN,
            "ADMIN_API_TOKEN": ADMIN,
            "LOG_LEVEL": "INFO",
        }
        argv = [voice_agent, "serve", "--host", "127.0.0.1", "--port", str(port)]
        with procs.managed(argv, server_env, logs / "server.log") as server:
            _wait_ready(port)
            honest_cfg = {
                "url": f"{ws}/{TOKEN}",
                "honest_calls": cfg.honest_calls,
                "honest_spacing_s": cfg.honest_spacing_s,
            }
            pids = {"server": server.pid, "fakes": fakes_pid}
            with Monitor(pids, f"{http_url}/health", f"{http_url}/health", period_s=0.5) as mon:
                t_base = time.monotonic()
                baseline = _finish(
                    _role("honest", {**honest_cfg, "name": "baseline"}, logs, "baseline"),
                    logs,
                    "baseline",
                    120,
                )
                t_attack = time.monotonic()
                attack_cfg = {
                    **asdict(cfg),
                    "url": ws,
                    "http_url": http_url,
                    "token": TOKEN,
                    "admin": ADMIN,
                }
                attackers = _role("attackers", attack_cfg, logs, "attackers")
                time.sleep(cfg.honest_delay_s)
                t_honest = time.monotonic()
                honest = _finish(
                    _role("honest", {**honest_cfg, "name": "honest"}, logs, "honest"),
                    logs,
                    "honest",
                    180,
                )
                t_honest_end = time.monotonic()
                attacks = _finish(attackers, logs, "attackers", cfg.idle_seconds + 180)
                t_end = time.monotonic()
            timeline = httpx.get(
                env["OPENAI_BASE_URL"].removesuffix("/v1") + "/_fake/timeline",
                params={"limit": 2000},
                timeout=60,
            ).json()
    server_log = (logs / "server.log").read_text(errors="replace")
    result = {
        "name": name,
        "config": asdict(cfg),
        "machine": machine(),
        "baseline": _calls(baseline["calls"]),
        "attacked": _calls(honest["calls"]),
        "honest_cpu_percent": honest.get("process_cpu_percent"),
        "attacks": attacks,
        "stt_audio_s": _stt_audio(timeline["stt"]),
        "server": _server(mon, t_base, t_attack, t_honest, t_honest_end, t_end),
        "log_lines": _log_counts(server_log),
    }
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1))
    return result


def _calls(calls: list[dict[str, Any]]) -> dict[str, Any]:
    served = [c for c in calls if c["served"]]
    return {
        "served": len(served),
        "total": len(calls),
        "errors": sorted({c["error"] for c in calls if c["error"]}),
        "greeting_ms": summary([c["greeting_ms"] for c in served]),
        "reply_ms": summary([c["reply_ms"] for c in served]),
    }


def _stt_audio(stt: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds of caller audio the fake Deepgram received: the fast callers ask for 8 kHz,
    the honest and idle calls run at 16 kHz."""
    fast = sum(c["audio_bytes"] for c in stt if c["query"].get("sample_rate") == "8000")
    other = sum(c["audio_bytes"] for c in stt if c["query"].get("sample_rate") != "8000")
    return {"fast_callers": round(fast / 16000, 1), "others": round(other / 32000, 1)}


def _server(
    mon: Monitor, t_base: float, t_attack: float, t_honest: float, t_honest_end: float, t_end: float
) -> dict[str, Any]:
    def window(t0: float, t1: float) -> dict[str, float | None]:
        cpu, rss, wall = mon.window("server", t0, t1)
        return {
            "cpu_percent": round(100 * cpu / wall, 1) if wall else None,
            "rss_peak_mb": round(rss, 1),
        }

    lag = [ms for t, ms in mon.health_ms if t_honest <= t <= t_honest_end]
    return {
        "baseline": window(t_base, t_attack),
        "attack": window(t_attack, t_end),
        "during_honest_calls": window(t_honest, t_honest_end),
        "health_probe_ms_during_honest_calls": summary(lag),
        "health_failures": mon.health_failures,
        "host_cpu_percent_attack": mon.host_cpu_percent(t_attack, t_end),
    }


def _log_counts(text: str) -> dict[str, int]:
    return {
        "lines": text.count("\n"),
        "refused_handshake_lines": text.count("Refused a /voice handshake"),
        "bans": text.count("Banning "),
        "faster_than_real_time": text.count("Caller audio arrives faster than real time"),
        "no_metadata": text.count("No metadata frame within"),
        "tracebacks": text.count("Traceback"),
    }


def markdown(result: dict[str, Any]) -> str:
    """The summary table for docs/reliability.md."""
    cfg, attacks, srv = result["config"], result["attacks"], result["server"]
    base, hit = result["baseline"], result["attacked"]

    def lat(calls: dict[str, Any], key: str) -> str:
        s = calls[key]
        return f"{s['p50']:.0f} / {s['p95']:.0f} ms" if s.get("n") else "-"

    idle, fast, posts = attacks["idle"], attacks["fast"], attacks["posts"]
    post = ", ".join(f"{p['status']} after {p['seconds']:.2f} s" for p in posts)
    logs = result["log_lines"]
    rows = [
        ("Honest calls served (alone)", f"{base['served']}/{base['total']}"),
        ("Honest calls served (under attack)", f"{hit['served']}/{hit['total']}"),
        (
            "Greeting p50 / p95, alone → under attack",
            f"{lat(base, 'greeting_ms')} → {lat(hit, 'greeting_ms')}",
        ),
        (
            "Reply p50 / p95, alone → under attack",
            f"{lat(base, 'reply_ms')} → {lat(hit, 'reply_ms')}",
        ),
        (
            f"{cfg['idle']} idle sockets from {cfg['idle_addresses']} addresses, valid token, "
            f"reconnecting for {cfg['idle_seconds']:.0f} s",
            f"attempts {idle['outcomes']}; closed with {idle['close_codes']}, held median "
            f"{idle['held_s_median']} s, max {idle['held_s_max']} s; spoken to: {idle['greeted']}",
        ),
        (
            f"{cfg['bad_per_s']:.0f} bad-token handshakes/s for {cfg['bad_seconds']:.0f} s, "
            f"{cfg['bad_addresses']} addresses",
            f"{attacks['bad_tokens']}; {logs['bans']} bans, "
            f"{logs['refused_handshake_lines']} refusal log lines in all",
        ),
        (f"{cfg['post_mib']} MB POST /api/calls: no token, token, chunked", post),
        (
            f"{cfg['fast']} callers at {cfg['fast_speedup']:.0f}× real time for "
            f"{cfg['fast_seconds']:.0f} s",
            f"{fast['audio_s_sent']:.0f} s of audio sent, "
            f"{result['stt_audio_s']['fast_callers']:.0f} s reached the STT; "
            f"{logs['faster_than_real_time']} log lines",
        ),
        (
            "Server CPU (of one core) / RSS peak",
            f"alone {srv['baseline']['cpu_percent']} % / {srv['baseline']['rss_peak_mb']} MB; "
            f"attack {srv['attack']['cpu_percent']} % / {srv['attack']['rss_peak_mb']} MB",
        ),
        ("Server log", f"{logs['lines']} lines, {logs['tracebacks']} tracebacks"),
        (
            "Client processes' own CPU (attackers at nice 10)",
            f"attackers {attacks.get('process_cpu_percent')} %, "
            f"honest callers {result.get('honest_cpu_percent')} %",
        ),
    ]
    lines = ["| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)
