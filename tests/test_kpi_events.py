"""The konnect live-event stream against the fake on loopback: SSE across chunk
boundaries, reconnecting after drops, ends, refusals and silence, one stream at a time,
the SR key never logged, and the server's consumer matching events to calls."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import aclosing

import pytest

from kpi.client import KnowlarityClient
from kpi.errors import ConfigError
from kpi.models import CdrEvent, KonnectEvent, TelephonyEvent, UnknownEvent
from kpi.service import KpiService
from pipeline.call_record import CallRecord, CallRegistry
from testkit.fake_kpi import K_NUMBER, FakeKpi, eventually

pytestmark = pytest.mark.timeout(30)

CUSTOMER = "+919876543210"


@pytest.fixture
async def fake() -> AsyncIterator[FakeKpi]:
    async with FakeKpi() as server:
        yield server


async def take(client: KnowlarityClient, count: int) -> list[KonnectEvent]:
    """The first ``count`` events of a fresh stream (closed afterwards)."""
    events: list[KonnectEvent] = []
    async with aclosing(client.events()) as stream:
        async for event in stream:
            events.append(event)
            if len(events) == count:
                break
    return events


async def test_events_parsed_across_chunk_boundaries(fake: FakeKpi) -> None:
    hangup = {"event_type": "HANGUP", "uuid": "u-1", "call_recording": "http://rec/ड.mp3"}
    cdr = {"type": "CDR", "uuid": "u-1", "Call_Type": "Incoming", "call_duration": 29}
    fake.konnect.send_comment("hello")
    fake.konnect.send_event({"event_type": "ORIGINATE", "uuid": "u-1"}, chunk_size=1)
    fake.konnect.send_event({"type": "AGENT_CALL", "uuid": "u-1"}, chunk_size=3, newline="\r\n")
    fake.konnect.send_event(hangup, chunk_size=5, space=False, pretty=True)
    fake.konnect.send_raw(": keep-alive\r\n\r\n", chunk_size=2)
    fake.konnect.send_event(cdr, chunk_size=7, id="c1", event="cdr")
    fake.konnect.send_event("not json at all", chunk_size=4)
    async with KnowlarityClient(fake.client_config()) as client:
        events = await take(client, 5)
    assert [type(e) for e in events] == [
        TelephonyEvent,
        TelephonyEvent,
        TelephonyEvent,
        CdrEvent,
        UnknownEvent,
    ]
    assert [e.name for e in events[:4]] == ["ORIGINATE", "AGENT_CALL", "HANGUP", "CDR"]
    assert events[2].raw() == hangup
    assert events[3].raw() == cdr
    [connection] = fake.konnect.connections
    assert connection.path == f"/update-stream/{fake.sr_api_key}/konnect"
    assert connection.headers["accept"] == "text/event-stream"
    # The stream host gets no account credentials: its URL already holds the SR key.
    assert "x-api-key" not in connection.headers
    assert "authorization" not in connection.headers


async def test_dropped_connection_resumes_from_the_last_event(fake: FakeKpi) -> None:
    first = {"event_type": "ANSWER", "uuid": "u-1"}
    second = {"type": "CDR", "uuid": "u-1", "call_duration": 3}
    fake.konnect.send_event(first, id="1")
    fake.konnect.send_event(second, id="2", drop_after=25, chunk_size=10)  # cut mid-event
    async with KnowlarityClient(fake.client_config()) as client:
        events = await take(client, 2)
    # The half-sent event was not delivered half; the replay after reconnecting was.
    assert [e.raw() for e in events] == [first, second]
    assert len(fake.konnect.connections) == 2
    assert "last-event-id" not in fake.konnect.connections[0].headers
    assert fake.konnect.connections[1].headers["last-event-id"] == "1"
    assert fake.konnect.max_open_streams == 1


async def test_abrupt_drop_between_events_and_clean_end_both_reconnect(fake: FakeKpi) -> None:
    fake.konnect.send_event({"event_type": "ORIGINATE", "uuid": "a"})
    fake.konnect.drop()
    fake.konnect.send_event({"event_type": "ANSWER", "uuid": "a"})
    fake.konnect.end()
    fake.konnect.send_event({"event_type": "HANGUP", "uuid": "a"})
    async with KnowlarityClient(fake.client_config()) as client:
        events = await take(client, 3)
    assert [e.name for e in events] == ["ORIGINATE", "ANSWER", "HANGUP"]
    assert len(fake.konnect.connections) == 3
    assert fake.konnect.max_open_streams == 1


async def test_refusals_back_off_exponentially_with_jitter(fake: FakeKpi) -> None:
    fake.konnect.refuse(503, times=4)
    fake.konnect.send_event({"event_type": "ORIGINATE", "uuid": "b"})
    delays: list[float] = []

    async def record(delay: float) -> None:
        delays.append(delay)
        await asyncio.sleep(0)

    config = fake.client_config(stream_backoff_initial_s=1.0, stream_backoff_max_s=4.0)
    async with KnowlarityClient(config, sleep=record, rand=lambda: 1.0) as client:
        events = await take(client, 1)
    assert [e.name for e in events] == ["ORIGINATE"]
    assert delays == [1.0, 2.0, 4.0, 4.0]  # capped
    assert len(fake.konnect.connections) == 5


async def test_backoff_resets_after_a_delivered_event(fake: FakeKpi) -> None:
    fake.konnect.refuse(503)
    fake.konnect.send_event({"event_type": "ORIGINATE", "uuid": "c"})
    fake.konnect.drop()
    fake.konnect.send_event({"event_type": "ANSWER", "uuid": "c"})
    delays: list[float] = []

    async def record(delay: float) -> None:
        delays.append(delay)
        await asyncio.sleep(0)

    config = fake.client_config(stream_backoff_initial_s=1.0, stream_backoff_max_s=8.0)
    async with KnowlarityClient(config, sleep=record, rand=lambda: 1.0) as client:
        await take(client, 2)
    assert delays == [1.0, 1.0]


async def test_silence_reconnects_one_stream_at_a_time(fake: FakeKpi) -> None:
    config = fake.client_config(stream_idle_timeout_s=0.1)
    async with KnowlarityClient(config) as client:
        received: list[KonnectEvent] = []

        async def consume() -> None:
            async with aclosing(client.events()) as stream:
                async for event in stream:
                    received.append(event)

        task = asyncio.create_task(consume())
        await fake.wait_for(lambda: len(fake.konnect.connections) >= 3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert received == []
    assert fake.konnect.max_open_streams == 1
    await fake.wait_for(lambda: fake.konnect.open_streams == 0)


async def test_a_second_stream_on_one_client_is_refused(fake: FakeKpi) -> None:
    async with KnowlarityClient(fake.client_config()) as client:
        first = client.events()
        fake.konnect.send_event({"event_type": "ORIGINATE", "uuid": "e"})
        async with aclosing(first):
            await anext(first)
            with pytest.raises(RuntimeError, match="already open"):
                await anext(client.events())
        # Closed: a new stream may open (once the server saw the old one go).
        await fake.wait_for(lambda: fake.konnect.open_streams == 0)
        fake.konnect.send_event({"event_type": "ANSWER", "uuid": "e"})
        assert [e.name for e in await take(client, 1)] == ["ANSWER"]
    assert fake.konnect.max_open_streams == 1


async def test_events_need_the_sr_key(fake: FakeKpi) -> None:
    async with KnowlarityClient(fake.client_config(sr_api_key=None)) as client:
        with pytest.raises(ConfigError, match="KNOWLARITY_SR_API_KEY"):
            await anext(client.events())
    assert fake.requests == []


async def test_the_sr_key_is_never_logged(fake: FakeKpi, caplog: pytest.LogCaptureFixture) -> None:
    secret = fake.sr_api_key
    fake.konnect.refuse(403, body=f"unknown key {secret}")  # even if echoed back
    fake.konnect.send_event({"event_type": "ORIGINATE", "uuid": "f"})
    fake.konnect.drop()
    fake.konnect.send_event({"event_type": "ANSWER", "uuid": "f"})
    with (
        caplog.at_level(logging.DEBUG),
        caplog.at_level(logging.DEBUG, logger="httpx"),
        caplog.at_level(logging.DEBUG, logger="httpcore"),
    ):
        async with KnowlarityClient(fake.client_config()) as client:
            await take(client, 2)
        # And a client whose key is refused outright keeps retrying without leaking it.
        wrong = fake.client_config(sr_api_key="wrong-sr-key-4242")
        async with KnowlarityClient(wrong) as client:
            stream = client.events()
            task = asyncio.create_task(anext(stream))
            await fake.wait_for(lambda: len(fake.konnect.connections) >= 6)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await stream.aclose()
    text = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert secret not in text
    assert "wrong-sr-key-4242" not in text
    assert "/update-stream/***/konnect" in text
    assert any(
        r.name == "httpx" and "/update-stream/***/konnect" in r.getMessage() for r in caplog.records
    )
    assert "HTTP 403 unknown key ***" in caplog.text
    assert "HTTP 401" in caplog.text


# --- the server's consumer ------------------------------------------------------------------


async def test_service_consumes_and_matches_events_to_calls(
    fake: FakeKpi, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CallRegistry()
    now = time.time()
    call = registry.add(
        CallRecord(
            call_id="call-42",
            virtual_number=K_NUMBER,
            customer_number=CUSTOMER.lstrip("+"),  # the stream node may drop the plus
            started_at=now - 40,
        )
    )
    other = registry.add(CallRecord(call_id="call-7", virtual_number=K_NUMBER, started_at=now))
    service = KpiService(fake.settings().knowlarity, registry)
    with caplog.at_level(logging.INFO, logger="voice.KONNECT"):
        await service.start()
        await service.start()  # idempotent: still one consumer, one stream
        hangup = {
            "event_type": "HANGUP",
            "uuid": "k-77",
            "knowlarity_number": K_NUMBER,
            "customer_number": CUSTOMER,
            "call_direction": "Inbound",
        }
        cdr = {
            "type": "CDR",
            "uuid": "k-77",
            "dispnumber": K_NUMBER,
            "caller_id": CUSTOMER,
            "Call_Type": "Incoming",
            "call_duration": 38,
            "resource_url": "http://kservices.knowlarity.com/kstorage/read?uuid=k-77.mp3",
        }
        fake.konnect.send_event(hangup, id="1", chunk_size=9)
        fake.konnect.send_event(json.dumps({"type": "PING"}), id="2")
        fake.konnect.send_event(cdr, id="3", chunk_size=11)
        await eventually(lambda: len(service.recent_events()) == 3)
        was_running, was_connected = service.running, service.connected
        await service.aclose()
    assert was_running
    assert was_connected
    assert not service.running
    assert call.recording_url == cdr["resource_url"]
    assert call.provider_events == [hangup, cdr]
    assert other.provider_events == []
    recent = service.recent_events()
    assert [(e.kind, e.name, e.call_id) for e in recent] == [
        ("telephony", "HANGUP", "call-42"),
        ("unknown", "", None),
        ("cdr", "CDR", "call-42"),
    ]
    on_call = [r.getMessage() for r in caplog.records if getattr(r, "call_id", "") == "call-42"]
    assert len(on_call) == 2
    assert "HANGUP uuid=k-77" in on_call[0]
    assert "CDR uuid=k-77" in on_call[1]
    assert fake.konnect.max_open_streams == 1
    await fake.wait_for(lambda: fake.konnect.open_streams == 0)


# --- issue 12, finding 4: bare JSON lines ------------------------------------------------


async def test_bare_json_lines_are_events_too(
    fake: FakeKpi, caplog: pytest.LogCaptureFixture
) -> None:
    """The reference's Python sample reads the stream with iter_lines(): one JSON object
    per line, no SSE framing. Such lines used to vanish without a trace."""
    originate = {"event_type": "ORIGINATE", "uuid": "u-7", "k_api_key": "k-secret-1"}
    cdr = {"type": "CDR", "uuid": "u-7", "Call_Type": "Incoming", "call_duration": 29}
    fake.konnect.send_raw(json.dumps(originate) + "\n", chunk_size=5)
    fake.konnect.send_raw("this is no event\n")
    # The reference prints its sample event over several lines, with a stray comma.
    fake.konnect.send_raw(
        '{\n"business_call_type":"Unanswered",\n"call_recording":null,\n, "call_type":null,\n'
        '"uuid":"u-7",\n"event_type":"ANSWER"\n}\n',
        chunk_size=7,
    )
    fake.konnect.send_raw(json.dumps(cdr) + "\r\n")
    fake.konnect.send_event({"event_type": "HANGUP", "uuid": "u-7"})  # SSE on the same stream
    with caplog.at_level(logging.INFO, logger="voice.KONNECT"):
        async with KnowlarityClient(fake.client_config()) as client:
            events = await take(client, 4)
    assert [e.name for e in events] == ["ORIGINATE", "ANSWER", "CDR", "HANGUP"]
    assert events[0].raw() == {"event_type": "ORIGINATE", "uuid": "u-7"}  # no k_api_key
    assert events[2].raw() == cdr
    messages = [r.getMessage() for r in caplog.records]
    assert any("bare JSON lines" in m for m in messages)
    assert any("skipped not an event: 'this is no event'" in m for m in messages)


async def test_unparseable_events_are_logged(
    fake: FakeKpi, caplog: pytest.LogCaptureFixture
) -> None:
    fake.konnect.send_event("not json at all")
    fake.konnect.send_raw("{broken json\n}\n")
    fake.konnect.send_event({"event_type": "HANGUP", "uuid": "u-8"})
    async with KnowlarityClient(fake.client_config()) as client:
        events = await take(client, 3)
    assert [type(e) for e in events] == [UnknownEvent, UnknownEvent, TelephonyEvent]
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 2
    assert "'not json at all'" in skipped[0]
    assert "'{broken json\\n}'" in skipped[1]
