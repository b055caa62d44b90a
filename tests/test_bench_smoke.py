"""The benchmark harness runs end to end: fakes, server and callers as three processes.

Asserts only that the harness works (the JSON has its fields, no call failed, every
process was cleaned up), nothing about speed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

psutil = pytest.importorskip("psutil")  # the bench extra

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def _children_of_us() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


@pytest.mark.timeout(180)
def test_bench_smoke_run_writes_results_and_cleans_up() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "smoke", "--label", "smoke"],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    name = json.loads(done.stdout)["name"]  # the run's summary, printed on stdout
    path = RESULTS / f"{name}.json"
    result = json.loads(path.read_text())
    try:
        assert result["calls"]["concurrent"] == 2
        assert result["calls"]["failed"] == 0, result["calls"]["errors"]
        assert result["calls"]["matched_to_stt"] == result["calls"]["total"]
        for key in (
            "greeting_ms",
            "turn_overhead_ms",
            "turn_overhead_from_speech_end_ms",
            "barge_in_from_words_ms",
            "barge_in_from_speech_started_ms",
        ):
            figure = result["figures_ms"][key]
            assert figure["n"] > 0, key
            assert set(figure) >= {"p50", "p95", "p99"}
        server = result["server"]
        for key in ("cpu_s_per_call_minute", "rss_per_call_mb", "loop_lag_probe_ms"):
            assert key in server
        assert result["machine"]["cores"] >= 1
        assert not _children_of_us()
    finally:
        path.unlink()  # a smoke run is not a measurement
        shutil.rmtree(RESULTS / "logs" / result["name"], ignore_errors=True)
