"""docs/performance.png: turn overhead and server CPU per call against concurrency."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def plot(results: dict[str, dict[int, dict[str, Any]]], out: Path) -> None:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, runs in results.items():
        if len(runs) < 3:
            continue
        ns = sorted(runs)
        p50 = [runs[n]["figures_ms"]["turn_overhead_ms"]["p50"] for n in ns]
        p95 = [runs[n]["figures_ms"]["turn_overhead_ms"]["p95"] for n in ns]
        line = ax1.plot(ns, p50, "o-", label=f"{label} p50")[0]
        ax1.plot(ns, p95, "s--", color=line.get_color(), label=f"{label} p95")
        cpu = [runs[n]["server"]["cpu_s_per_call_minute"] for n in ns]
        ax2.plot(ns, cpu, "o-", label=label)
    ax1.axhline(20, color="grey", lw=0.8, ls=":")
    ax1.set(
        yscale="log",
        xscale="log",
        xlabel="concurrent calls",
        ylabel="turn overhead (ms)",
        title="Server's share of each turn",
    )
    ax2.set(
        xscale="log",
        xlabel="concurrent calls",
        ylabel="server CPU s per call-minute",
        title="CPU per call (one server process)",
    )
    ax2.set_ylim(bottom=0)
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
