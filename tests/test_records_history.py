"""The playground's history from the call records store, with this process's memory beside it.

A stored record is turned back into the events the page draws (the same as the live
hub's, as far as a record keeps them); the list prefers the store and takes from memory
what the store has not caught up with; an unreadable store leaves memory to answer.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pipeline.events import (
    AgentSpeech,
    BargeIn,
    CallEnded,
    CallerSpeech,
    CallEvent,
    CallEventHub,
    CallStarted,
    TurnTimings,
    event_to_dict,
)
from records.accumulator import CallAccumulator
from records.model import CallRecord
from records.store import RecordStore
from server.call_history import HubHistory
from server.records_history import RecordsHistory, record_events

T0 = 1_790_000_000.0


def a_call(call_id: str, started_at: float = T0, *, ended: bool = True) -> list[CallEvent]:
    """Greeting, an answered turn, an interrupted turn, a barge-in, the end."""
    events: list[CallEvent] = [
        CallStarted(call_id=call_id, sample_rate=8000, language="en", started_at=started_at),
        AgentSpeech(call_id, 0, "Hello!", "Hello!", at_ms=100, first_audio_ms=120, greeting=True),
        CallerSpeech(call_id, "final", "When do you open?", at_ms=2000),
        AgentSpeech(call_id, 1, "At nine.", "At nine.", at_ms=3500),
        TurnTimings(
            call_id,
            1,
            "When do you open?",
            end_of_speech_ms=1800,
            stt_final_ms=2000,
            llm_first_token_ms=2100,
            tts_first_audio_ms=2300,
            first_audio_sent_ms=2310,
            at_ms=3600,
        ),
        CallerSpeech(call_id, "final", "And on Sunday?", at_ms=5000),
        AgentSpeech(call_id, 2, "On Sundays we open at ten.", "On Sundays", at_ms=6000),
        BargeIn(call_id, 2, heard_text="On Sundays", words="wait", at_ms=5900),
        TurnTimings(
            call_id,
            2,
            "And on Sunday?",
            stt_final_ms=5000,
            llm_first_token_ms=5100,
            tts_first_audio_ms=5300,
            first_audio_sent_ms=5310,
            outcome="interrupted",
            at_ms=6100,
        ),
    ]
    if ended:
        events.append(CallEnded(call_id, "caller_hangup", "", 7.5, 2, 1, at_ms=7500))
    return events


def stored(events: list[CallEvent]) -> CallRecord:
    acc = CallAccumulator(events[0].call_id, server="test:1", mask=True, now=T0)
    for event in events:
        acc.add(event)
    return acc.record


def hub_with(*calls: list[CallEvent]) -> CallEventHub:
    hub = CallEventHub()
    for events in calls:
        for event in events:
            hub.publish(event)
    return hub


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[RecordStore]:
    store = RecordStore(f"sqlite+aiosqlite:///{tmp_path / 'records.db'}")
    await store.upgrade()
    yield store
    await store.aclose()


def _page_view(events: list[dict[str, object]]) -> list[tuple[object, ...]]:
    """What the page draws from events: the transcript lines and each turn's marks."""
    keys = {
        "caller_speech": ("phase", "text"),
        "agent_speech": ("turn", "text", "heard"),
        "barge_in": ("turn", "heard_text", "words"),
        "turn_timings": ("turn", "user_text", "outcome", "stt_final_ms", "first_audio_sent_ms"),
        "call_ended": ("reason", "turns", "barge_ins"),
    }
    return [(e["kind"], *(e[k] for k in keys[str(e["kind"])])) for e in events if e["kind"] in keys]


def test_a_record_gives_back_the_events_the_page_draws() -> None:
    events = a_call("c1")
    from_record = record_events(stored(events))
    live = [event_to_dict(e) for e in events]
    assert sorted(_page_view(from_record), key=repr) == sorted(_page_view(live), key=repr)
    assert from_record[0]["kind"] == "call_started" and from_record[-1]["kind"] == "call_ended"
    times = [e["at_ms"] for e in from_record]
    assert times == sorted(times)
    # The page's transcript needs each reply before the barge-in that cut it.
    kinds = [(e["kind"], e.get("turn")) for e in from_record]
    assert kinds.index(("agent_speech", 2)) < kinds.index(("barge_in", 2))
    assert kinds.index(("caller_speech", None)) < kinds.index(("agent_speech", 1))


def test_a_running_call_has_no_end_event() -> None:
    events = record_events(stored(a_call("c1", ended=False)[:1]))
    assert [e["kind"] for e in events] == ["call_started"]


async def test_the_list_is_the_store_with_what_it_has_not_caught_up_with_from_memory(
    store: RecordStore,
) -> None:
    old, late, running = a_call("old", T0), a_call("late", T0 + 10), a_call("new", T0 + 20)
    # "old" is stored and ended; "late" stored at its start only; "new" not stored yet.
    await store.upsert([stored(old), stored(late[:1])])
    # This process's memory: "late" has ended since; it never knew "old" (another process).
    history = RecordsHistory(store, HubHistory(hub_with(late, running[:3])))
    rows = await history.recent(10)
    assert [(r.call_id, r.source, r.active) for r in rows] == [
        ("new", "memory", True),
        ("late", "memory", False),
        ("old", "records", False),
    ]
    assert rows[2].turns == 2 and rows[2].barge_ins == 1 and rows[2].duration_s == 7.5
    assert [r.call_id for r in await history.recent(2)] == ["new", "late"]

    detail = await history.detail("old")
    assert detail is not None and detail.to_dict()["source"] == "records"
    assert detail.summary.end_reason == "caller_hangup"
    late_detail = await history.detail("late")  # memory knows more than the stored start
    assert late_detail is not None and late_detail.summary.source == "memory"
    assert late_detail.summary.end_reason == "caller_hangup"
    assert await history.detail("nowhere") is None


async def test_a_running_call_only_the_store_knows_is_shown_from_it(store: RecordStore) -> None:
    await store.upsert([stored(a_call("elsewhere")[:1])])  # another replica's running call
    history = RecordsHistory(store, HubHistory(CallEventHub()))
    (row,) = await history.recent(5)
    assert row.active and row.source == "records"
    detail = await history.detail("elsewhere")
    assert detail is not None and [e["kind"] for e in detail.events] == ["call_started"]


async def test_an_unreadable_store_leaves_the_history_to_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    unmigrated = RecordStore(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")  # no table
    history = RecordsHistory(unmigrated, HubHistory(hub_with(a_call("here"))))
    with caplog.at_level(logging.WARNING):
        (row,) = await history.recent(5)
        detail = await history.detail("here")
    assert row.call_id == "here" and row.source == "memory"
    assert detail is not None and detail.summary.source == "memory"
    assert any("Records store unreadable" in r.getMessage() for r in caplog.records)
    await unmigrated.aclose()
