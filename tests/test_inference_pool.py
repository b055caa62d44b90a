"""The bounded worker pool that keeps model inference off the event loop."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

import pytest

from pipeline.inference_pool import LATER, URGENT, InferencePool


def busy(pool: InferencePool) -> bool:
    return not pool.idle


async def test_at_most_workers_jobs_run_and_waiters_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = InferencePool("test-pool", workers=1)
    release = threading.Event()
    running = threading.Event()

    def blocking() -> str:
        running.set()
        release.wait(5)
        return "done"

    caplog.set_level(logging.INFO)
    first = asyncio.create_task(pool.run("job 1", blocking))
    await asyncio.to_thread(running.wait, 5)
    assert busy(pool)
    second = asyncio.create_task(pool.run("job 2", lambda: "second"))
    await asyncio.sleep(0.05)
    assert pool.waiting == 1 and not second.done()
    assert await pool.run_if_idle(lambda: "optional") is None  # busy: optional work skipped
    release.set()
    assert await first == "done" and await second == "second"
    assert (pool.jobs, pool.waited) == (2, 1) and pool.idle
    assert any(
        "test-pool busy: 1 running, 1 waiting (job 2" in r.getMessage() for r in caplog.records
    )
    pool.close()


async def test_a_caller_who_leaves_frees_nothing_early_and_leaks_nothing() -> None:
    pool = InferencePool("test-pool", workers=1)
    release = threading.Event()
    started = threading.Event()

    def blocking() -> int:
        started.set()
        release.wait(5)
        return 1

    job = asyncio.create_task(pool.run("job", blocking))
    await asyncio.to_thread(started.wait, 5)
    waiter = asyncio.create_task(pool.run("waiter", lambda: 2))
    await asyncio.sleep(0.02)
    waiter.cancel()  # hung up while waiting in line: leaves the line at once
    await asyncio.wait({waiter})
    assert waiter.cancelled() and pool.waiting == 0
    job.cancel()  # hung up while its job runs: returns at once, the worker finishes it
    await asyncio.wait({job})
    assert job.cancelled() and busy(pool)
    release.set()
    for _ in range(500):
        if not busy(pool):
            break
        await asyncio.sleep(0.01)
    assert not busy(pool)  # the slot came back when the native work ended
    assert await pool.run_if_idle(lambda: 3) == 3
    pool.close()


async def test_errors_reach_the_caller() -> None:
    pool = InferencePool("test-pool", workers=2)

    def broken() -> None:
        raise RuntimeError("native failure")

    with pytest.raises(RuntimeError, match="native failure"):
        await pool.run("job", broken)
    assert pool.idle
    pool.close()
    with pytest.raises(ValueError, match="at least 1"):
        InferencePool("x", workers=0)


async def test_urgent_work_goes_before_later_work_then_first_come_first_served() -> None:
    pool = InferencePool("test-pool", workers=1)
    release = threading.Event()
    started = threading.Event()
    order: list[str] = []

    def blocking() -> None:
        started.set()
        release.wait(5)

    def job(name: str) -> Callable[[], None]:
        return lambda: order.append(name)

    first = asyncio.create_task(pool.run("running", blocking))
    await asyncio.to_thread(started.wait, 5)
    waiting = [
        asyncio.create_task(pool.run("a", job("later-1"), LATER)),
        asyncio.create_task(pool.run("b", job("urgent-1"), URGENT)),
        asyncio.create_task(pool.run("c", job("later-2"), LATER)),
        asyncio.create_task(pool.run("d", job("urgent-2"), URGENT)),
    ]
    await asyncio.sleep(0.05)
    waiting[2].cancel()  # a caller who hung up leaves the line
    release.set()
    await first
    await asyncio.wait(waiting)
    assert order == ["urgent-1", "urgent-2", "later-1"]
    assert pool.idle
    pool.close()
