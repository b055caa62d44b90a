"""Watch the server from outside: CPU and RSS with psutil, event-loop lag via /health.

The server is a black box process, so its event-loop lag is estimated from the latency of
a cheap ``GET /health`` every 100 ms (an idle server answers in ~1 ms; anything above that
is time the request waited for the loop). Both run in threads of the orchestrator.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field

import httpx
import psutil


@dataclass
class Sample:
    t: float
    cpu_s: float  # user + system, cumulative
    rss_mb: float


@dataclass
class ProcessWatch:
    pid: int
    samples: list[Sample] = field(default_factory=list)

    def sample(self) -> Sample | None:
        try:
            cpu_s, rss_mb = process_tree_usage(self.pid)
        except psutil.Error:
            return None
        s = Sample(time.monotonic(), cpu_s, rss_mb)
        self.samples.append(s)
        return s


class Monitor:
    """Samples each watched process every ``period_s`` and probes /health every 100 ms."""

    def __init__(
        self, pids: dict[str, int], health_url: str, fakes_url: str, period_s: float = 1.0
    ) -> None:
        self.watches = {name: ProcessWatch(pid) for name, pid in pids.items()}
        self.health_url = health_url
        self.period_s = period_s
        self.health_ms: list[tuple[float, float]] = []  # (t, latency ms)
        self.health_failures = 0
        self.fakes_url = fakes_url
        self.fakes_ms: list[tuple[float, float]] = []  # the fakes' loop, probed the same way
        self.active_calls: list[tuple[float, int]] = []
        self.host_busy: list[tuple[float, float]] = []  # (t, cumulative busy CPU seconds)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._sample_loop, daemon=True),
            threading.Thread(target=self._probe_loop, daemon=True),
        ]

    def __enter__(self) -> Monitor:
        for w in self.watches.values():
            w.sample()
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)
        for w in self.watches.values():
            w.sample()

    def _sample_loop(self) -> None:
        while not self._stop.wait(self.period_s):
            for w in self.watches.values():
                w.sample()
            times = psutil.cpu_times()
            self.host_busy.append((time.monotonic(), times.user + times.system + times.nice))

    def host_cpu_percent(self, t0: float, t1: float) -> float | None:
        """Whole-machine busy CPU (percent of one core) between t0 and t1."""
        inside = [(t, busy) for t, busy in self.host_busy if t0 <= t <= t1]
        if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
            return None
        return 100 * (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])

    def _probe_loop(self) -> None:
        with httpx.Client(timeout=5.0) as client:
            while not self._stop.wait(0.1):
                started = time.monotonic()
                try:
                    r = client.get(self.health_url)
                    latency = (time.monotonic() - started) * 1000
                    self.health_ms.append((started, latency))
                    self.active_calls.append((started, int(r.json().get("active_calls", 0))))
                except (httpx.HTTPError, ValueError):
                    self.health_failures += 1
                started = time.monotonic()
                try:
                    client.get(self.fakes_url)
                    self.fakes_ms.append((started, (time.monotonic() - started) * 1000))
                except httpx.HTTPError:
                    pass

    def window(self, name: str, t0: float, t1: float) -> tuple[float, float, float]:
        """(cpu seconds, peak RSS MB, wall seconds) of ``name`` between t0 and t1."""
        inside = [s for s in self.watches[name].samples if t0 <= s.t <= t1]
        if len(inside) < 2:
            return 0.0, max((s.rss_mb for s in inside), default=0.0), 0.0
        return (
            inside[-1].cpu_s - inside[0].cpu_s,
            max(s.rss_mb for s in inside),
            inside[-1].t - inside[0].t,
        )


def process_tree_usage(pid: int) -> tuple[float, float]:
    """CPU seconds and RSS (MB) of a process and its children: under
    `voice-agent serve --workers N` the work is in the worker processes."""
    proc = psutil.Process(pid)
    with proc.oneshot():
        cpu = proc.cpu_times()
        cpu_s = cpu.user + cpu.system
        rss = proc.memory_info().rss
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.Error), child.oneshot():
            times = child.cpu_times()
            cpu_s += times.user + times.system
            rss += child.memory_info().rss
    return cpu_s, rss / 2**20
