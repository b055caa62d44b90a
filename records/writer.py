"""Records reach the database without ever making a call wait.

The event listener only folds events into a per-call accumulator and, on the call's
start and end, puts a snapshot on a bounded queue (``put_nowait``: when the queue is
full the record is dropped and counted, never waited for). One writer task takes
batches off the queue and writes them in one transaction. When the database is slow or
down it says so once in a clear log line, keeps retrying with backoff (the calls go on),
and says when it is back. A second task applies ``RECORDS_RETENTION_DAYS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from config.logs import get_logger
from pipeline.events import CallEnded, CallEvent, CallStarted
from records.accumulator import CallAccumulator
from records.model import CallRecord
from records.store import RecordStore

log = get_logger("RECORDS")

BATCH = 100
WRITE_TIMEOUT_S = 10.0
SLOW_WRITE_S = 2.0
BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 30.0
REPEAT_OUTAGE_LOG_S = 60.0
PURGE_EVERY_S = 3600.0
MAX_OPEN_CALLS = 100_000  # accumulators of calls that never sent CallEnded (a bug) stop here


@dataclass(frozen=True, slots=True)
class _Cdr:
    call_id: str
    recording_url: str | None
    events: list[dict[str, Any]]


_Job = CallRecord | _Cdr
Count = Callable[[int], None]


def server_name() -> str:
    """Which process served a call: the host (the pod, in Kubernetes) and the pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


class RecordWriter:
    def __init__(
        self,
        store: RecordStore,
        *,
        mask_numbers: bool = True,
        queue_size: int = 1000,
        retention_days: float = 0.0,
        migrate: bool = False,
        server: str | None = None,
        on_written: Count | None = None,
        on_dropped: Count | None = None,
    ) -> None:
        self.store = store
        self._mask = mask_numbers
        self._retention_days = retention_days
        self._server = server or server_name()
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=queue_size)
        self._calls: dict[str, CallAccumulator] = {}
        self._on_written = on_written
        self._on_dropped = on_dropped
        self._tasks: list[asyncio.Task[None]] = []
        self.written = 0
        self.dropped = 0
        self.failing_since: float | None = None  # monotonic; None while writes succeed
        # The schema is checked (and migrated) before the first write when asked: the
        # database may have been down when the server started.
        self._schema_checked = not migrate

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    # -- producers (sync, cheap: called from the call's own code path) ---------------------

    def listener(self, event: CallEvent) -> None:
        """A :class:`~pipeline.events.CallEventHub` listener."""
        acc = self._calls.get(event.call_id)
        if acc is None:
            if len(self._calls) >= MAX_OPEN_CALLS:
                return
            acc = self._calls[event.call_id] = CallAccumulator(
                event.call_id, server=self._server, mask=self._mask, now=time.time()
            )
        acc.add(event)
        if isinstance(event, CallStarted):
            self._enqueue(copy.deepcopy(acc.record))  # visible while the call runs
        elif isinstance(event, CallEnded):
            del self._calls[event.call_id]
            self._enqueue(acc.record)

    def on_cdr(self, call_id: str, recording_url: str | None, events: list[dict[str, Any]]) -> None:
        """The konnect consumer matched a CDR/HANGUP to one of our calls."""
        acc = self._calls.get(call_id)
        if acc is not None:  # still running: it goes out with the final record
            acc.attach_cdr(recording_url, events)
        else:
            self._enqueue(_Cdr(call_id, recording_url, list(events)))

    def _enqueue(self, job: _Job) -> None:
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self.dropped += 1
            if self._on_dropped is not None:
                self._on_dropped(1)
            if self.dropped == 1 or self.dropped % 100 == 0:
                log.error(
                    "Records queue full (%d waiting): dropped the record of call %s "
                    "(%d dropped so far); the database is too slow or down",
                    self._queue.qsize(),
                    job.call_id,
                    self.dropped,
                )

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._write_loop(), name="records-writer"))
        if self._retention_days > 0:
            self._tasks.append(asyncio.create_task(self._purge_loop(), name="records-purge"))

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Write what is queued (up to ``timeout_s``), then stop; count the rest as dropped."""
        if self._tasks and not self._queue.empty():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._queue.join()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        lost = self._queue.qsize()
        if lost:
            self.dropped += lost
            if self._on_dropped is not None:
                self._on_dropped(lost)
            log.error("%d call records not written: the records database did not answer", lost)

    # -- the writer task ------------------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._write_until_done(batch)
            for _ in batch:
                self._queue.task_done()

    async def _write_until_done(self, batch: list[_Job]) -> None:
        delay = BACKOFF_INITIAL_S
        last_log = 0.0
        while True:
            started = time.monotonic()
            try:
                async with asyncio.timeout(WRITE_TIMEOUT_S):
                    await self._write(batch)
            except Exception as exc:  # any database fault: the calls must go on
                now = time.monotonic()
                if self.failing_since is None:
                    self.failing_since = now
                if now - last_log >= REPEAT_OUTAGE_LOG_S:
                    last_log = now
                    log.error(
                        "Records database %s is failing (%s); calls go on, %d records "
                        "waiting, retrying every %.1f-%.0f s",
                        self.store.display_url,
                        _describe(exc),
                        len(batch) + self._queue.qsize(),
                        BACKOFF_INITIAL_S,
                        BACKOFF_MAX_S,
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
                continue
            took = time.monotonic() - started
            if self.failing_since is not None:
                log.warning(
                    "Records database back after %.1f s; writing again",
                    time.monotonic() - self.failing_since,
                )
                self.failing_since = None
            elif took > SLOW_WRITE_S:
                log.warning(
                    "Records database slow: writing %d records took %.1f s", len(batch), took
                )
            self.written += len(batch)
            if self._on_written is not None:
                self._on_written(len(batch))
            return

    async def _write(self, batch: list[_Job]) -> None:
        if not self._schema_checked:
            await self.store.upgrade()
            self._schema_checked = True
        latest: dict[str, CallRecord] = {}
        for job in batch:
            if isinstance(job, CallRecord):
                latest[job.call_id] = job  # a call's end replaces its start
        await self.store.upsert(list(latest.values()))
        for job in batch:
            if isinstance(job, _Cdr) and not await self.store.attach_cdr(
                job.call_id, job.recording_url, job.events
            ):
                log.warning("No record of call %s for its Knowlarity CDR", job.call_id)

    async def _purge_loop(self) -> None:
        while True:
            before = time.time() - self._retention_days * 86_400
            try:
                removed = await self.store.purge(before)
            except Exception as exc:
                log.warning("Could not apply RECORDS_RETENTION_DAYS: %s", _describe(exc))
            else:
                if removed:
                    log.info(
                        "Removed %d call records older than %g days", removed, self._retention_days
                    )
            await asyncio.sleep(PURGE_EVERY_S)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {WRITE_TIMEOUT_S:.0f} s"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__
