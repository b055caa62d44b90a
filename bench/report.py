"""Tables for docs/PERFORMANCE.md from bench/results/*.json, and the plot.

``python -m bench report`` rewrites the block between the ``bench:tables`` markers (the
latest run per label and call count) and docs/performance.png; the prose around it is
written by hand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .run import RESULTS

DOC = RESULTS.parent.parent / "docs" / "PERFORMANCE.md"
START, END = "<!-- bench:tables -->", "<!-- /bench:tables -->"
FIGURES = (
    ("turn_overhead_ms", "turn overhead"),
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
        label = result["config"]["label"]
        out.setdefault(label, {})[int(result["calls"]["concurrent"])] = result
    return out


def _ms(s: dict[str, Any]) -> str:
    if not s.get("n"):
        return "–"
    return f"{s['p50']:.1f} / {s['p95']:.1f} / {s['p99']:.1f}"


def table(runs: dict[int, dict[str, Any]]) -> str:
    ns = sorted(runs)
    head = "| figure (ms, p50 / p95 / p99) | " + " | ".join(f"N={n}" for n in ns) + " |"
    rows = [head, "|---" * (len(ns) + 1) + "|"]
    for key, title in FIGURES:
        rows.append(f"| {title} | " + " | ".join(_ms(runs[n]["figures_ms"][key]) for n in ns) + " |")
    rows.append("| samples: turns / barge-ins | " + " | ".join(
        f"{runs[n]['figures_ms']['turn_overhead_ms']['n']} / "
        f"{runs[n]['figures_ms']['barge_in_from_words_ms']['n']}" for n in ns) + " |")  # fmt: skip
    rows.append("| greeting, cold first call | " + " | ".join(
        f"{runs[n]['greeting_cold_ms']}" for n in ns) + " |")  # fmt: skip
    rows.append("| loop lag probe (/health) | " + " | ".join(
        _ms(runs[n]["server"]["loop_lag_probe_ms"]) for n in ns) + " |")  # fmt: skip
    rows.append("| failed calls / total | " + " | ".join(
        f"{runs[n]['calls']['failed']} / {runs[n]['calls']['total']}" for n in ns) + " |")  # fmt: skip
    rows.append("| late playAudio chunks | " + " | ".join(
        str(runs[n]["calls"]["late_plays"]) for n in ns) + " |")  # fmt: skip
    rows.append("| server CPU % (of one core) | " + " | ".join(
        str(runs[n]["server"]["cpu_percent"]) for n in ns) + " |")  # fmt: skip
    rows.append("| server CPU s per call-minute | " + " | ".join(
        str(runs[n]["server"]["cpu_s_per_call_minute"]) for n in ns) + " |")  # fmt: skip
    rows.append("| server RSS idle → peak (MB) | " + " | ".join(
        f"{runs[n]['server']['rss_idle_mb']} → {runs[n]['server']['rss_peak_mb']}"
        for n in ns) + " |")  # fmt: skip
    rows.append("| RSS per call (MB) | " + " | ".join(
        str(runs[n]["server"]["rss_per_call_mb"]) for n in ns) + " |")  # fmt: skip
    rows.append("| fakes / callers CPU % | " + " | ".join(
        f"{runs[n]['others']['fakes']['cpu_percent']} / {runs[n]['others']['callers']['cpu_percent']}"
        for n in ns) + " |")  # fmt: skip
    return "\n".join(rows)


def tables_markdown(results: dict[str, dict[int, dict[str, Any]]]) -> str:
    parts = [START]
    for label, runs in results.items():
        if label == "smoke":
            continue
        first = runs[min(runs)]
        cfg = first["config"]
        loop = "uvloop + httptools" if cfg["fast_loop"] else "asyncio + h11"
        parts.append(
            f"\n#### `{label}` — {loop}, log level {cfg['log_level']}, "
            f"{cfg['seconds']:.0f} s per call, runs {', '.join(runs[n]['name'] for n in sorted(runs))}\n"
        )
        parts.append(table(runs))
    parts.append(END)
    return "\n".join(parts)


def write_report() -> None:
    from .plot import plot

    results = load_results()
    block = tables_markdown(results)
    text = DOC.read_text() if DOC.exists() else f"# Performance\n\n{START}\n{END}\n"
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    DOC.write_text(head + block + tail)
    plot(results, DOC.with_name("performance.png"))
