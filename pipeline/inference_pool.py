"""Model inference off the event loop, with bounded concurrency and a visible queue.

Local speech models are CPU-bound native code (ONNX Runtime, which releases the GIL), so
they run in a small thread pool: ``workers`` jobs at a time per model, the rest wait in
line on an asyncio semaphore, which keeps the wait cancellable (a caller who hangs up
leaves the line) and lets us log clearly when calls are waiting. Each model already uses
both cores for one job, so more workers than cores only adds contention.

The line has priorities: work a caller is waiting on right now (a final transcript, the
first sentence of a reply) goes before work that only keeps a reply flowing (its later
sentences, rendered while the first one plays), so one long answer cannot hold every
other call's first words. Equal priorities are served first come, first served.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from config.logs import get_logger

T = TypeVar("T")

log = get_logger("LOCAL")

WARN_EVERY_S = 5.0  # at most one "busy" line per pool this often


URGENT = 0  # a caller waits for this now
LATER = 1  # keeps a reply flowing (a later sentence)


class InferencePool:
    def __init__(self, name: str, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.name = name
        self.workers = workers
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._line: list[tuple[int, int, asyncio.Future[None]]] = []  # (priority, seq, turn)
        self._seq = itertools.count()
        self._running = 0
        self._waiting = 0
        self.jobs = 0  # jobs run so far
        self.waited = 0  # of them, jobs that had to wait for a worker
        self.busy_s = 0.0  # total job run time (CPU-bound, so about CPU time x threads)
        self.wait_s = 0.0  # total time jobs waited for a worker
        self._warned_at = -WARN_EVERY_S

    @property
    def idle(self) -> bool:
        return self._running < self.workers and self._waiting == 0

    @property
    def waiting(self) -> int:
        return self._waiting

    async def run(self, what: str, func: Callable[[], T], priority: int = URGENT) -> T:
        """Run ``func`` in the pool once a worker is free (cancellable while it waits)."""
        if self._running >= self.workers or self._waiting:
            await self._wait_in_line(what, priority)
        else:
            self._running += 1
        return await self._run_holding_slot(func)

    async def run_if_idle(self, func: Callable[[], T]) -> T | None:
        """Run ``func`` only if a worker is free right now (optional work), else None."""
        if not self.idle:
            return None
        self._running += 1
        return await self._run_holding_slot(func)

    async def _wait_in_line(self, what: str, priority: int) -> None:
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._line, (priority, next(self._seq), turn))
        self._waiting += 1
        self.waited += 1
        started = time.monotonic()
        if started - self._warned_at >= WARN_EVERY_S:
            self._warned_at = started
            log.warning(
                "%s busy: %d running, %d waiting (%s waits for a worker; %d waits so far)",
                self.name,
                self._running,
                self._waiting,
                what,
                self.waited,
            )
        try:
            await turn  # the slot is handed over with it
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._release()  # granted as we were cancelled: pass the slot on
            raise
        finally:
            self._waiting -= 1
            self.wait_s += time.monotonic() - started

    def _release(self) -> None:
        """A worker is free: hand it to the first in line, or mark it free."""
        while self._line:
            _, _, turn = heapq.heappop(self._line)
            if not turn.done():  # skip those who left the line
                turn.set_result(None)
                return
        self._running -= 1

    async def _run_holding_slot(self, func: Callable[[], T]) -> T:
        self.jobs += 1
        started = time.monotonic()

        def timed() -> T:
            try:
                return func()
            finally:
                self.busy_s += time.monotonic() - started

        def finished(job: asyncio.Future[T]) -> None:
            self._release()
            if not job.cancelled():
                job.exception()  # retrieved: a caller who left must not leave a warning

        try:
            job = asyncio.get_running_loop().run_in_executor(self._executor, timed)
        except BaseException:
            self._release()
            raise
        # Native code cannot be interrupted: a cancelled caller returns at once, and the
        # worker (with its slot) is freed when the job ends.
        job.add_done_callback(finished)
        return await asyncio.shield(job)

    def stats(self) -> dict[str, float | int]:
        return {
            "workers": self.workers,
            "jobs": self.jobs,
            "waited": self.waited,
            "waiting_now": self._waiting,
            "busy_s": round(self.busy_s, 3),
            "wait_s": round(self.wait_s, 3),
        }

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
