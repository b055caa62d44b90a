"""The records store against real databases: SQLite (aiosqlite) and PostgreSQL (asyncpg)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import inspect

from records.model import CallRecord
from records.store import CallQuery, RecordStore
from tests.postgres import Postgres

T0 = 1_790_000_000.0
_names = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, postgres: Postgres
) -> AsyncIterator[RecordStore]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'sub' / 'records.db'}"
    else:
        url = await postgres.create_database(f"store_{next(_names)}")
    found = RecordStore(url)
    await found.upgrade()
    yield found
    await found.aclose()


def call(call_id: str, start: float, **fields: object) -> CallRecord:
    record = CallRecord(
        call_id=call_id,
        started_at=T0 + start,
        virtual_number="+91******0000",
        customer_number=f"+91******{int(start) % 10000:04d}",
        call_type="inbound",
        sample_rate=16000,
        language="en-US",
        providers={"stt": "deepgram", "llm": "openai", "tts": "cartesia"},
    )
    for name, value in fields.items():
        setattr(record, name, value)
    return record


async def test_migrations_create_the_schema_once_and_are_idempotent(store: RecordStore) -> None:
    await store.upgrade()  # a second time: nothing to do
    assert await store.current_revision() == "0001"
    async with store.engine.connect() as conn:
        tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
        indexes = await conn.run_sync(
            lambda c: {i["name"] for i in inspect(c).get_indexes("calls")}
        )
    assert {"calls", "alembic_version"} <= set(tables)
    assert "ix_calls_started_at" in indexes


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
async def test_replicas_starting_together_migrate_without_racing(
    dialect: str, tmp_path: Path, postgres: Postgres
) -> None:
    if dialect == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'race.db'}"
    else:
        url = await postgres.create_database(f"race_{next(_names)}")
    stores = [RecordStore(url) for _ in range(3)]
    try:
        await asyncio.gather(*(s.upgrade() for s in stores))
        assert [await s.current_revision() for s in stores] == ["0001"] * 3
    finally:
        for s in stores:
            await s.aclose()


async def test_a_started_call_is_replaced_by_its_finished_record(store: RecordStore) -> None:
    await store.upsert([call("c1", 0)])
    running = await store.get("c1")
    assert running is not None and running.active and running.end_reason is None
    turns = [{"turn": 1, "caller_text": "hello", "heard_text": "Hi", "timings": {"x": 1.5}}]
    finished = call(
        "c1",
        0,
        ended_at=T0 + 30,
        duration_s=30.0,
        end_reason="caller_hangup",
        turn_count=1,
        turns=turns,
        provider_errors=[{"provider": "openai", "category": "timeout"}],
    )
    await store.upsert([finished])
    got = await store.get("c1")
    assert got == finished
    assert await store.get("missing") is None


async def test_list_filters_by_time_number_and_end_reason_newest_first_with_paging(
    store: RecordStore,
) -> None:
    await store.upsert(
        [
            call("a", 0, end_reason="caller_hangup"),
            call("b", 100, end_reason="transfer"),
            call("c", 200, end_reason="caller_hangup"),
            call("d", 300),  # still running
        ]
    )
    page, total = await store.list(CallQuery(limit=2))
    assert [r.call_id for r in page] == ["d", "c"] and total == 4
    page, total = await store.list(CallQuery(limit=2, offset=2))
    assert [r.call_id for r in page] == ["b", "a"] and total == 4
    page, _ = await store.list(CallQuery(since=T0 + 100, until=T0 + 300))
    assert [r.call_id for r in page] == ["c", "b"]
    page, _ = await store.list(CallQuery(end_reason="caller_hangup"))
    assert [r.call_id for r in page] == ["c", "a"]
    page, _ = await store.list(CallQuery(number="+91******0100"))
    assert [r.call_id for r in page] == ["b"]
    page, total = await store.list(CallQuery(number="+91******0000"))  # the Knowlarity number
    assert total == 4


async def test_export_pages_through_every_call_oldest_first(store: RecordStore) -> None:
    await store.upsert([call(f"k{n}", float(n // 2)) for n in range(7)])  # ties on start
    seen = [r.call_id async for r in store.iter_since(T0 + 1, batch=2)]
    assert seen == ["k2", "k3", "k4", "k5", "k6"]
    assert [r.call_id async for r in store.iter_since(None, T0 + 1, batch=2)] == ["k0", "k1"]


async def test_cdr_of_a_finished_call_and_retention(store: RecordStore) -> None:
    await store.upsert([call("old", -90 * 86_400), call("new", 0, end_reason="transfer")])
    url = "http://kservices.knowlarity.com/kstorage/read?uuid=r1.mp3"
    assert await store.attach_cdr("new", url, [{"type": "CDR", "uuid": "k1"}])
    assert not await store.attach_cdr("nobody", url, [])
    got = await store.get("new")
    assert (
        got is not None and got.recording_url == url and got.cdr == [{"type": "CDR", "uuid": "k1"}]
    )
    assert await store.purge(before=T0 - 30 * 86_400) == 1
    assert await store.get("old") is None and await store.get("new") is not None
