"""Matching CDR/HANGUP events to this server's calls, and the service's event buffer.
Pure: no sockets (the end-to-end consumer is in test_kpi_events)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta, timezone

import pytest

from config.settings import Settings
from kpi.models import CdrEvent, TelephonyEvent, UnknownEvent
from kpi.service import KpiService, attach, event_window, find_call, parse_time, same_number
from pipeline.call_record import CallRecord, CallRegistry

IST = timezone(timedelta(hours=5, minutes=30))
VIRTUAL, CUSTOMER = "+911140000000", "+919876543210"
T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=IST).timestamp()


def ist(seconds_after_t0: float) -> str:
    moment = datetime.fromtimestamp(T0 + seconds_after_t0, IST)
    return moment.strftime("%Y-%m-%d %H:%M:%S+05:30")


def record(call_id: str = "call-1", start: float = 0.0, end: float | None = 60.0) -> CallRecord:
    return CallRecord(
        call_id=call_id,
        virtual_number=VIRTUAL,
        customer_number=CUSTOMER,
        started_at=T0 + start,
        ended_at=None if end is None else T0 + end,
    )


def cdr(**fields: object) -> CdrEvent:
    base: dict[str, object] = {
        "type": "CDR",
        "uuid": "k-uuid-1",
        "dispnumber": VIRTUAL,
        "caller_id": CUSTOMER,
        "destination": "+919810000001",
        "Call_Type": "Incoming",
        "start_time": ist(1),
        "end_time": ist(59),
        "call_duration": 58,
        "resource_url": "http://kservices.knowlarity.com/kstorage/read?uuid=r1.mp3",
        "timezone_offset": "+0530",
    }
    base.update(fields)
    return CdrEvent.model_validate(base)


def test_parse_time_forms() -> None:
    assert (
        parse_time("2015-11-20 11:50:18+05:30")
        == datetime(2015, 11, 20, 11, 50, 18, tzinfo=IST).timestamp()
    )
    # The reference's garbled form: the space between date and time is lost.
    assert parse_time("2015-11-2011:51:37.868542+05:30") == pytest.approx(
        datetime(2015, 11, 20, 11, 51, 37, 868542, tzinfo=IST).timestamp()
    )
    assert parse_time("2015-11-20 06:20:18", "+0530") == parse_time("2015-11-20 06:20:18+05:30")
    assert parse_time("2015-11-20T00:00:00Z") == datetime(2015, 11, 20, tzinfo=UTC).timestamp()
    assert parse_time("2015-11-20 06:20:18") is None  # no zone: unknown, not guessed
    assert parse_time("$None") is None
    assert parse_time(None) is None


def test_same_number_ignores_formatting() -> None:
    assert same_number("+919876543210", "919876543210")
    assert same_number("+919876543210", "09876543210")
    assert same_number("+91 98765-43210", "9876543210")
    assert not same_number("+919876543210", "+919876543211")
    assert not same_number("+919876543210", "3210")  # too short to be a national form
    assert not same_number("", "+919876543210")


def test_cdr_matches_by_number_pair_and_time() -> None:
    other_time = record("call-old", start=-7200, end=-7100)
    other_number = CallRecord(
        call_id="call-x", virtual_number=VIRTUAL, customer_number="+919999999999", started_at=T0
    )
    target = record()
    found = find_call(cdr(), [other_time, other_number, target], received_at=T0 + 65)
    assert found is target


def test_outgoing_cdr_customer_is_the_destination() -> None:
    event = cdr(caller_id="+919810000001", destination=CUSTOMER, Call_Type="Outgoing")
    assert find_call(event, [record()], received_at=T0 + 65) is not None


def test_cdr_far_from_the_call_does_not_match() -> None:
    event = cdr(start_time=ist(3 * 3600), end_time=ist(3 * 3600 + 60))
    assert find_call(event, [record()], received_at=T0 + 3 * 3600 + 70) is None


def test_uuid_equal_to_call_id_wins() -> None:
    same_pair = record("call-1")
    by_uuid = CallRecord(call_id="k-uuid-1", started_at=T0 - 99999)
    assert find_call(cdr(), [by_uuid, same_pair], received_at=T0) is by_uuid


def test_uuid_seen_before_on_a_call_matches_directly() -> None:
    call = record()
    call.provider_events.append({"event_type": "HANGUP", "uuid": "k-uuid-1"})
    event = cdr(dispnumber="unknown", caller_id=None, destination=None)
    assert find_call(event, [call], received_at=T0) is call


def test_closest_start_wins() -> None:
    early = record("early", start=-100, end=30)
    close = record("close", start=0, end=60)
    assert find_call(cdr(), [early, close], received_at=T0 + 65) is close


def test_hangup_matches_an_active_call_now() -> None:
    active = record(end=None)
    hangup = TelephonyEvent(
        event_type="HANGUP", uuid="u", knowlarity_number=VIRTUAL, customer_number=CUSTOMER
    )
    assert event_window(hangup, T0 + 30) == (T0 + 30, T0 + 30)
    assert find_call(hangup, [active], received_at=T0 + 30) is active
    assert find_call(hangup.model_copy(update={"customer_number": None}), [active], T0) is None


def test_cdr_window_without_times_uses_arrival_and_duration() -> None:
    event = cdr(start_time=None, end_time="garbage")
    assert event_window(event, T0 + 100) == (T0 + 42, T0 + 100)


def test_attach_keeps_recording_and_ignores_replays() -> None:
    call = record()
    assert attach(call, cdr())
    assert call.recording_url == "http://kservices.knowlarity.com/kstorage/read?uuid=r1.mp3"
    assert not attach(call, cdr())  # the same event again (a resumed stream)
    assert len(call.provider_events) == 1
    hangup = TelephonyEvent(event_type="HANGUP", uuid="k-uuid-1", call_recording=None)
    assert attach(call, hangup)
    assert call.recording_url is not None  # a HANGUP without a recording keeps the URL


def test_service_buffers_events_and_logs_on_the_calls_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = CallRegistry()
    call = registry.add(record(end=None))
    settings = Settings(_env_file=None, knowlarity_events_buffer=3)
    service = KpiService(settings.knowlarity, registry, clock=lambda: T0 + 70)
    with caplog.at_level(logging.INFO, logger="voice.KONNECT"):
        service.handle_event(TelephonyEvent(event_type="ORIGINATE", uuid="k-uuid-1"))
        matched = service.handle_event(cdr())
        service.handle_event(UnknownEvent(raw_data="x"))
        service.handle_event(
            TelephonyEvent(event_type="HANGUP", knowlarity_number=VIRTUAL, customer_number=CUSTOMER)
        )
    assert matched.call_id == "call-1"
    assert matched.kind == "cdr"
    assert matched.name == "CDR"
    assert call.recording_url is not None
    lines = [r for r in caplog.records if getattr(r, "call_id", None) == "call-1"]
    assert any("CDR uuid=k-uuid-1" in r.getMessage() for r in lines)
    assert any("HANGUP" in r.getMessage() for r in lines)
    assert all(call.recording_url not in r.getMessage() for r in caplog.records)
    # The buffer is bounded: the oldest event went.
    recent = service.recent_events()
    assert [e.name for e in recent] == ["CDR", "", "HANGUP"]
    assert [e.name for e in service.recent_events(1)] == ["HANGUP"]
    assert service.recent_events(0) == []


async def test_service_without_sr_key_does_not_start(caplog: pytest.LogCaptureFixture) -> None:
    service = KpiService(Settings(_env_file=None).knowlarity, CallRegistry())
    with caplog.at_level(logging.INFO, logger="voice.KONNECT"):
        await service.start()
    assert not service.running
    assert not service.connected
    assert "KNOWLARITY_SR_API_KEY" in caplog.text
    await service.aclose()
