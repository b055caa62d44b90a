"""Tables for docs/PERFORMANCE.md from bench/results/*.json, and the plot.

``python -m bench report`` rewrites the block between the ``bench:tables`` markers (the
latest run per label and call count) and docs/performance.png; the prose around it is
written by hand.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .run import RESULTS

DOC = RESULTS.parent.parent / "docs" / "PERFORMANCE.md"
SWEEP_MIN = 3  # a label with runs at this many call counts gets a table
PLOT_SWEEP_MIN, PLOT_SWEEPS = 5, 2  # the plot shows the latest two full sweeps
START, END = "<!-- bench:tables -->", "<!-- /bench:tables -->"
SOAK_START, SOAK_END = "<!-- bench:soak -->", "<!-- /bench:soak -->"
FIGURES = (
    ("turn_overhead_ms", "turn overhead"),
    ("turn_overhead_past_fill_ms", "turn overhead past the 100 ms fill"),
    ("turn_overhead_from_speech_end_ms", "turn overhead from caller's speech end"),
    ("greeting_ms", "greeting (cached)"),
    ("barge_in_from_words_ms", "barge-in (words → kill)"),
    ("barge_in_from_speech_started_ms", "barge-in (SpeechStarted → kill)"),
    ("turn_first_audio_ms", "caller speech end → first reply audio"),
)


def load_results() -> dict[str, dict[int, dict[str, Any]]]:
    """label -> calls -> the latest result (file names sort by time)."""
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for path in sorted(RESULTS.glob("*.json")):
        result = json.loads(path.read_text())
        if "calls" not in result or "config" not in result:
            continue  # another bench's result (e.g. `bench abuse`)
        label = result["config"]["label"]
        out.setdefault(label, {})[int(result["calls"]["concurrent"])] = result
    return out


def _ms(s: dict[str, Any]) -> str:
    if not s.get("n"):
        return "–"
    return f"{s['p50']:.1f} / {s['p95']:.1f} / {s['p99']:.1f}"


def _cpu(r: dict[str, Any]) -> str:
    server = r["server"]
    return str(server.get("cpu_percent_steady") or server["cpu_percent"])


def _others(r: dict[str, Any]) -> str:
    return f"{r['others']['fakes']['cpu_percent']} / {r['others']['callers']['cpu_percent']}"


def _samples(r: dict[str, Any]) -> str:
    figures = r["figures_ms"]
    return f"{figures['turn_overhead_ms']['n']} / {figures['barge_in_from_words_ms']['n']}"


ROWS: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
    ("samples: turns / barge-ins", _samples),
    ("greeting, cold first call", lambda r: str(r["greeting_cold_ms"])),
    ("loop lag probe (/health)", lambda r: _ms(r["server"]["loop_lag_probe_ms"])),
    ("failed calls / total", lambda r: f"{r['calls']['failed']} / {r['calls']['total']}"),
    ("late playAudio chunks", lambda r: str(r["calls"]["late_plays"])),
    ("server CPU % of one core (steady)", _cpu),
    ("server CPU s per call-minute", lambda r: str(r["server"]["cpu_s_per_call_minute"])),
    (
        "server RSS idle → peak (MB)",
        lambda r: f"{r['server']['rss_idle_mb']} → {r['server']['rss_peak_mb']}",
    ),
    ("RSS per call (MB)", lambda r: str(r["server"]["rss_per_call_mb"])),
    ("fakes / callers CPU %", _others),
    (
        "whole box CPU % (of 200; others' work too)",
        lambda r: str(r["others"].get("host_cpu_percent")),
    ),
)


def table(runs: dict[int, dict[str, Any]]) -> str:
    ns = sorted(runs)
    rows = [
        "| figure (ms: p50 / p95 / p99) | " + " | ".join(f"N={n}" for n in ns) + " |",
        "|---" * (len(ns) + 1) + "|",
    ]
    for key, title in FIGURES:
        cells = [_ms(runs[n]["figures_ms"].get(key, {})) for n in ns]
        rows.append(f"| {title} | " + " | ".join(cells) + " |")
    for title, cell in ROWS:
        rows.append(f"| {title} | " + " | ".join(cell(runs[n]) for n in ns) + " |")
    return "\n".join(rows)


def tables_markdown(results: dict[str, dict[int, dict[str, Any]]]) -> str:
    parts = [START]
    for label, runs in results.items():
        if len(runs) < SWEEP_MIN:
            continue  # A/B pairs and smoke runs are discussed by hand
        first = runs[min(runs)]
        cfg = first["config"]
        loop = "uvloop + httptools" if cfg["fast_loop"] else "asyncio + h11"
        names = ", ".join(runs[n]["name"] for n in sorted(runs))
        parts.append(
            f"\n#### `{label}` — {loop}, log level {cfg['log_level']}, "
            f"{cfg['seconds']:.0f} s per call; runs {names}\n"
        )
        parts.append(table(runs))
    parts.append(END)
    return "\n".join(parts)


def soak_markdown(results: dict[str, dict[int, dict[str, Any]]]) -> str:
    """Server RSS at each whole minute of the latest soak run (labels with "soak" in them)."""
    soaks = [r for label, runs in results.items() if "soak" in label for r in runs.values()]
    if not soaks:
        return f"{SOAK_START}\n(no soak run yet)\n{SOAK_END}"
    result = max(soaks, key=lambda r: str(r["name"]))  # names start with the UTC time
    series = result["server"]["series_t_rss_mb_cpu_s"]
    minutes: dict[int, tuple[float, float]] = {}
    for t, rss, cpu in series:
        if t >= 0:
            minutes.setdefault(int(t // 60), (rss, cpu))
    last = max(minutes)
    shown = [m for m in sorted(minutes) if m <= 2 or m % 5 == 0 or m == last]
    rows = [
        f"{SOAK_START}",
        f"Run `{result['name']}`: {result['calls']['concurrent']} concurrent calls of 60 s, "
        f"back to back, {result['calls']['total']} calls "
        f"({result['calls']['failed']} failed), server CPU "
        f"{result['server']['cpu_s_per_call_minute']} s per call-minute.\n",
        "| minute | " + " | ".join(str(m) for m in shown) + " |",
        "|---" * (len(shown) + 1) + "|",
        "| server RSS (MB) | " + " | ".join(f"{minutes[m][0]:.1f}" for m in shown) + " |",
        SOAK_END,
    ]
    return "\n".join(rows)


def _replace(text: str, start: str, end: str, block: str) -> str:
    if start not in text:
        return text.rstrip() + f"\n\n{block}\n"
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    return head + block + tail


def write_report() -> None:
    from .plot import plot

    results = load_results()
    text = DOC.read_text() if DOC.exists() else "# Performance\n"
    text = _replace(text, START, END, tables_markdown(results))
    text = _replace(text, SOAK_START, SOAK_END, soak_markdown(results))
    DOC.write_text(text)
    sweeps = {label: runs for label, runs in results.items() if len(runs) >= PLOT_SWEEP_MIN}
    latest = dict(list(sweeps.items())[-PLOT_SWEEPS:])  # the plot stays readable
    plot(latest, DOC.with_name("performance.png"))
