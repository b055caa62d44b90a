"""Typed konnect events from the shapes the API reference shows (typos and all)."""

from __future__ import annotations

import json

import pytest

from kpi.models import (
    CdrEvent,
    MakeCallBody,
    NotificationList,
    TelephonyEvent,
    UnknownEvent,
    event_kind,
    parse_event,
)

# The reference's "CDR event data" sample, verbatim: a telephony event with a stray comma.
SEED_TELEPHONY = """{
"business_call_type":"Unanswered",
"agent_number":"+91XXXXXXXXXX",
"call_recording":null,
, "call_type":null,
"uuid":"40eec284206dtf6d2d0e503c9877f9",
"customer_number":"+91XXXXXXXXXX",
"knowlarity_number":"+91XXXXXXXXXX",
"event_type":"ORIGINATE",
"called":"81XXXXXXXX"
}"""

# The reference's CDR example, verbatim (including the lost space in end_time).
SEED_CDR = """{
"dispnumber" :"+91XXXXXXXXXX",
"business_call_type" :"Phone",
"caller_id" :"+91XXXXXXXXXX",
"Call_Type" : "Incoming",
"start_time" :"2015-11-20 11:50:18+05:30",
"uuid" :"129ac15d-d8b4-499e-92e1-83317d1745df",
"call_duration" : 29,
"destination" :"+91XXXXXXXXXX",
"end_time" : "2015-11-2011:51:37.868542+05:30",
"resource_url" :"http://kservices.knowlarity.com/kstorage/read?uuid=6cd3bc78-3181-4e7d-aacf-daac580601a9_0_1_r.mp3&server_ip=124.7.51.154&base_dir=recording",
"type" : "CDR",
"timezone_offset" :"+0530"
}"""


def test_seed_telephony_event_with_stray_comma() -> None:
    event = parse_event(SEED_TELEPHONY)
    assert isinstance(event, TelephonyEvent)
    assert event.name == "ORIGINATE"
    assert event.uuid == "40eec284206dtf6d2d0e503c9877f9"
    assert event.business_number == "+91XXXXXXXXXX"
    assert event.call_recording is None
    # Unknown fields are kept, and dumped back as sent.
    assert event.raw()["called"] == "81XXXXXXXX"
    assert event.raw()["call_type"] is None
    assert event_kind(event) == "telephony"


def test_seed_cdr_event() -> None:
    event = parse_event(SEED_CDR)
    assert isinstance(event, CdrEvent)
    assert event.call_type == "Incoming"
    assert event.call_duration == 29
    assert event.duration_s == 29.0
    assert event.resource_url is not None
    assert event.resource_url.endswith("base_dir=recording")
    assert event.raw()["Call_Type"] == "Incoming"  # the reference's spelling survives
    assert event.raw() == json.loads(SEED_CDR)
    assert event_kind(event) == "cdr"


@pytest.mark.parametrize(
    "kind", ["AGENT_CALL", "AGENT_ANSWER", "CUSTOMER_CALL", "CUSTOMER_ANSWER", "BRIDGE", "HANGUP"]
)
def test_public_integration_type_values(kind: str) -> None:
    event = parse_event(json.dumps({"type": kind, "uuid": "u", "customer_number": None}))
    assert isinstance(event, TelephonyEvent)
    assert event.name == kind
    assert event.is_hangup is (kind == "HANGUP")


def test_hangup_with_recording() -> None:
    event = parse_event(
        '{"event_type": "HANGUP", "uuid": "u", "call_recording": "http://rec/1.mp3"}'
    )
    assert isinstance(event, TelephonyEvent)
    assert event.is_hangup
    assert event.call_recording == "http://rec/1.mp3"


def test_k_api_key_is_dropped() -> None:
    event = parse_event('{"event_type": "ANSWER", "uuid": "u", "k_api_key": "secret-key"}')
    assert "k_api_key" not in event.raw()
    assert "secret-key" not in repr(event)


def test_numbers_as_json_numbers_are_kept_as_strings() -> None:
    event = parse_event('{"event_type": "ANSWER", "customer_number": 919876543210}')
    assert isinstance(event, TelephonyEvent)
    assert event.customer_number == "919876543210"


@pytest.mark.parametrize(
    "data",
    ["not json", "[1, 2]", "42", '{"hello": "world"}', '{"type": "PING"}', ""],
)
def test_anything_else_is_unknown_and_kept(data: str) -> None:
    event = parse_event(data)
    assert isinstance(event, UnknownEvent)
    assert event_kind(event) == "unknown"
    if data.startswith("{"):
        assert event.raw() == json.loads(data)
    else:
        assert event.raw_data == data


def test_double_encoded_json() -> None:
    inner = json.dumps({"type": "CDR", "uuid": "u"})
    assert isinstance(parse_event(json.dumps(inner)), CdrEvent)


def test_odd_field_types_fall_back_to_unknown_without_losing_fields() -> None:
    event = parse_event('{"event_type": "ANSWER", "uuid": {"nested": true}}')
    assert isinstance(event, UnknownEvent)
    assert event.raw()["uuid"] == {"nested": True}


def test_notification_list_keeps_reference_fields() -> None:
    page = NotificationList.model_validate(
        {
            "meta": {"limit": 20, "next": None, "offset": 0, "previous": None, "total_count": 1},
            "objects": [{"id": 5, "k_number": "+919000000780", "enable": False, "app_url": "x"}],
        }
    )
    assert page.objects[0].k_number == "+919000000780"
    assert page.objects[0].raw()["app_url"] == "x"


def test_api_body_validation() -> None:
    body = MakeCallBody(customer_number="+919876543210", agent_number=None)
    assert body.whatsapp is False
    with pytest.raises(ValueError, match=r"E\.164"):
        MakeCallBody(customer_number="98765")
    with pytest.raises(ValueError, match="caller_id"):
        MakeCallBody(customer_number="+919876543210", caller_id="123")
