"""The virtual-time loop: timers jump, work in threads takes no virtual time."""

from __future__ import annotations

import asyncio
import time

from testkit.virtual_time import START, run_virtual


def test_timers_jump_and_fire_in_order() -> None:
    async def main() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        fired: list[tuple[str, float]] = []

        async def after(name: str, delay: float) -> None:
            await asyncio.sleep(delay)
            fired.append((name, loop.time()))

        started = time.monotonic()
        await asyncio.gather(after("hour", 3600), after("second", 1))
        assert time.monotonic() - started < 60  # an hour of virtual time, not of real time
        return fired

    assert run_virtual(main()) == [("second", START + 1), ("hour", START + 3600)]


def test_a_thread_takes_no_virtual_time_and_timers_wait_for_it() -> None:
    async def main() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        seen: list[tuple[str, float]] = []

        async def timer() -> None:
            await asyncio.sleep(0.001)
            seen.append(("timer", loop.time()))

        ticking = asyncio.create_task(timer())
        await asyncio.sleep(0)  # the timer is armed: 1 ms of virtual time from now
        await asyncio.to_thread(time.sleep, 0.05)  # 50 ms of real work in a thread
        seen.append(("thread", loop.time()))
        await ticking
        return seen

    # Without the wait the clock would have jumped to the timer while the thread worked.
    assert run_virtual(main()) == [("thread", START), ("timer", START + 0.001)]
