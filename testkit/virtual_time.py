"""An asyncio event loop on virtual time: whenever nothing is ready, the clock jumps to
the next timer. A 30 s silence timeout takes microseconds, and every sleep, timeout and
deadline in the code under test fires at exactly its virtual moment, whatever the load
of the machine::

    from testkit.virtual_time import run_virtual

    def test_silence_timeout() -> None:
        async def call() -> None:
            loop = asyncio.get_running_loop()
            session = CallSession(..., clock=loop.time)   # the session reads the same clock
            ...
            await asyncio.sleep(30)                       # instant

        run_virtual(call())

Only for code that waits on timers, in-memory objects (:mod:`testkit.memory`) and work
handed to threads with ``run_in_executor`` / ``asyncio.to_thread`` (model inference):
while such a job runs the clock stands still and the loop waits for it for real, so a
thread's work takes no virtual time and its result lands at the same virtual moment
whatever the load. Real sockets still run on real time: a test mixing them would see
time race. The clock starts at 1000.0 (not 0), so code that treats 0.0 as "never" stays
honest.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor
from typing import Any, TypeVar, TypeVarTuple, Unpack

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

START = 1000.0


class _JumpingSelector(selectors.DefaultSelector):
    """Polls real I/O without blocking; a wait for a timer becomes a jump of the clock."""

    def __init__(self) -> None:
        super().__init__()
        self.now = START
        self.jobs = 0  # executor jobs in flight: the clock waits for them

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events: list[tuple[selectors.SelectorKey, int]] = super().select(0)
        if events:
            return events
        if timeout is None or (timeout > 0 and self.jobs):
            # Nothing scheduled at all, or a thread is working: only real I/O (or the
            # thread's result, through the loop's self-pipe) can wake us.
            blocked: list[tuple[selectors.SelectorKey, int]] = super().select(None)
            return blocked
        if timeout > 0:
            self.now += timeout
        return events


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._jumping = _JumpingSelector()
        super().__init__(self._jumping)

    def time(self) -> float:
        return self._jumping.now

    def run_in_executor(
        self, executor: Executor | None, func: Callable[[Unpack[Ts]], T], *args: *Ts
    ) -> asyncio.Future[T]:
        job = super().run_in_executor(executor, func, *args)
        self._jumping.jobs += 1
        job.add_done_callback(self._job_done)
        return job

    def _job_done(self, _: asyncio.Future[Any]) -> None:
        self._jumping.jobs -= 1


def run_virtual(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a fresh virtual-time loop."""
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(main)
