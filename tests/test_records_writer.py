"""The records writer: calls never wait for the database, which may be slow, down or back."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from pipeline.events import CallEnded, CallEvent, CallStarted, TurnTimings
from records import writer as writer_module
from records.model import CallRecord
from records.store import RecordStore
from records.writer import RecordWriter
from tests.postgres import Postgres

_names = itertools.count()


def call_events(call_id: str, started_at: float = 1_790_000_000.0) -> list[CallEvent]:
    return [
        CallStarted(
            call_id=call_id,
            sample_rate=16000,
            language="en-US",
            customer_number="+919876543210",
            started_at=started_at,
        ),
        TurnTimings(call_id=call_id, turn=1, user_text="hi", stt_final_ms=10, at_ms=20),
        CallEnded(
            call_id=call_id,
            reason="caller_hangup",
            detail="caller hung up",
            duration_s=3.0,
            turns=1,
            barge_ins=0,
        ),
    ]


async def eventually(check: Callable[[], bool], timeout_s: float = 15.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_records_are_written_at_start_and_end_and_flushed_on_shutdown(
    tmp_path: Path,
) -> None:
    store = RecordStore(f"sqlite+aiosqlite:///{tmp_path / 'r.db'}")
    await store.upgrade()
    counted: list[int] = []
    writer = RecordWriter(store, server="test:1", on_written=counted.append)
    writer.start()
    first = call_events("w1")
    writer.listener(first[0])
    await eventually(lambda: writer.written == 1)
    running = await store.get("w1")
    assert running is not None and running.active and running.customer_number == "+91******3210"
    for event in first[1:]:
        writer.listener(event)
    for n in range(2, 5):  # more calls, then shut down at once: the queue is flushed
        for event in call_events(f"w{n}"):
            writer.listener(event)
    await writer.aclose()
    records = [await store.get(f"w{n}") for n in range(1, 5)]
    assert all(r is not None and r.end_reason == "caller_hangup" for r in records)
    assert records[0] is not None and records[0].turns[0]["caller_text"] == "hi"
    assert records[0].server == "test:1"
    assert sum(counted) == writer.written and writer.dropped == 0
    await store.aclose()


async def test_a_database_that_is_down_is_retried_until_it_is_back(
    postgres: Postgres, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"later_{next(_names)}"
    store = RecordStore(postgres.url(name))  # the database does not exist yet
    writer = RecordWriter(store, migrate=True)
    writer.start()
    with caplog.at_level(logging.WARNING, logger="voice.RECORDS"):
        for event in call_events("down-1"):
            writer.listener(event)  # returns at once: nothing here waits for the database
        await eventually(lambda: writer.failing_since is not None)
        assert any("is failing" in r.getMessage() for r in caplog.records)
        await postgres.create_database(name)
        await eventually(lambda: writer.written == 2, timeout_s=30)
    assert writer.failing_since is None and writer.dropped == 0
    assert any("back after" in r.getMessage() for r in caplog.records)
    record = await store.get("down-1")
    assert record is not None and record.end_reason == "caller_hangup"
    await writer.aclose()
    await store.aclose()


async def test_a_slow_database_drops_and_counts_records_instead_of_blocking_calls(
    postgres: Postgres, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_module, "SLOW_WRITE_S", 0.2)
    name = f"slow_{next(_names)}"
    store = RecordStore(await postgres.create_database(name))
    await store.upgrade()
    dropped: list[int] = []
    writer = RecordWriter(store, queue_size=4, on_dropped=dropped.append)
    writer.start()
    blocker = await asyncpg.connect(
        host="127.0.0.1", port=postgres.port, user=postgres.user, database=name
    )
    tx = blocker.transaction()
    await tx.start()
    await blocker.execute("LOCK TABLE calls IN ACCESS EXCLUSIVE MODE")
    with caplog.at_level(logging.WARNING, logger="voice.RECORDS"):
        for n in range(10):  # 20 records into a queue of 4, with the table locked
            for event in call_events(f"slow-{n}"):
                if not isinstance(event, TurnTimings):
                    writer.listener(event)
        assert writer.dropped == 16 and sum(dropped) == 16
        assert any("Records queue full" in r.getMessage() for r in caplog.records)
        await asyncio.sleep(0.5)  # the writer is stuck on the lock meanwhile
        await tx.rollback()
        await eventually(lambda: writer.written == 4)
        assert any("Records database slow" in r.getMessage() for r in caplog.records)
    await blocker.close()
    await writer.aclose()
    assert writer.dropped == 16
    await store.aclose()


async def test_cdr_reaches_running_and_finished_calls_and_old_calls_expire(
    tmp_path: Path,
) -> None:
    store = RecordStore(f"sqlite+aiosqlite:///{tmp_path / 'r.db'}")
    await store.upgrade()
    old = CallRecord(call_id="ancient", started_at=time.time() - 40 * 86_400)
    await store.upsert([old])
    writer = RecordWriter(store, retention_days=30)
    writer.start()
    now = time.time()
    running, finished = call_events("running", now), call_events("finished", now)
    for event in [*finished, running[0]]:
        writer.listener(event)
    writer.on_cdr("running", "http://rec/a.mp3", [{"uuid": "a"}])
    writer.on_cdr("finished", "http://rec/b.mp3", [{"uuid": "b"}])
    for event in running[1:]:
        writer.listener(event)
    await eventually(lambda: writer.written == 5)  # 2 + 2 records and the late CDR
    a, b = await store.get("running"), await store.get("finished")
    assert a is not None and (a.recording_url, a.cdr) == ("http://rec/a.mp3", [{"uuid": "a"}])
    assert b is not None and (b.recording_url, b.cdr) == ("http://rec/b.mp3", [{"uuid": "b"}])
    assert await store.get("ancient") is None  # RECORDS_RETENTION_DAYS=30
    await writer.aclose()
    await store.aclose()
