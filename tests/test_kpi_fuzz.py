"""Property tests of what Knowlarity (or anyone posing as it) sends us, and of our own
/api bodies: the konnect framing (SSE and bare JSON lines, any chunking), the event
parser, and the request models, never fail in any way but the documented one."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from kpi.konnect_stream import KonnectFramer
from kpi.models import (
    MakeCallBody,
    OtpCallBody,
    RegisterNotificationsBody,
    SetNotificationsBody,
    drop_credentials,
    parse_event,
)
from kpi.routes import build_router, validation_error
from kpi.service import KpiService
from pipeline.call_record import CallRegistry
from tests.conftest import make_settings

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
EVENTS = st.dictionaries(
    st.sampled_from(["event_type", "type", "uuid", "customer_number", "k_api_key", "x"]),
    st.text(max_size=16) | st.integers(),
    min_size=1,
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def encode(event: dict[str, Any], style: str) -> bytes:
    text = json.dumps(event, ensure_ascii=False)
    if style == "sse":
        return f"data: {text}\n\n".encode()
    if style == "sse-crlf":
        return f"data:{text}\r\n\r\n".encode()
    if style == "pretty":
        return (json.dumps(event, indent=2, ensure_ascii=False) + "\n").encode()
    return (text + "\n").encode()  # a bare JSON line


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(EVENTS, st.sampled_from(["sse", "sse-crlf", "line", "pretty"])), max_size=8),
    st.lists(st.integers(0, 10_000), max_size=12),
)
def test_any_mix_of_framings_in_any_chunking_yields_every_event(
    events: list[tuple[dict[str, Any], str]], cuts: list[int]
) -> None:
    stream = b"".join(encode(event, style) for event, style in events)
    framer = KonnectFramer()
    payloads: list[str] = []
    for chunk in split(stream, cuts):
        payloads += framer.feed(chunk)
    payloads += framer.close()
    assert [json.loads(p) for p in payloads] == [event for event, _ in events]
    assert framer.take_unparsed() == []


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000), st.lists(st.integers(0, 3000), max_size=8))
def test_the_framer_takes_any_bytes(data: bytes, cuts: list[int]) -> None:
    framer = KonnectFramer(max_line_chars=256, max_event_chars=1024)
    for chunk in split(data, cuts):
        for payload in framer.feed(chunk):
            assert len(payload) <= 1024 + 256
            parse_event(payload)  # never raises
        assert len(framer._buffer) <= 256
    framer.close()
    assert len(framer.take_unparsed()) <= 100


@given(st.text(max_size=400))
def test_parse_event_never_raises(text: str) -> None:
    parse_event(text)


@given(JSON)
def test_parsed_events_never_carry_credentials(value: Any) -> None:
    event = parse_event(json.dumps({"event_type": "HANGUP", "k_api_key": "k", "nested": value}))
    dumped = json.dumps(event.raw())
    assert "k_api_key" not in dumped
    assert drop_credentials({"app_data": 1, "api_key": 2, "ok": value}) == {
        "ok": drop_credentials(value)
    }


MODELS: list[type[BaseModel]] = [
    MakeCallBody,
    OtpCallBody,
    RegisterNotificationsBody,
    SetNotificationsBody,
]


@pytest.mark.parametrize("model", MODELS)
@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=JSON)
def test_request_models_accept_or_refuse_cleanly(model: type[BaseModel], body: Any) -> None:
    with contextlib.suppress(ValidationError):
        model.model_validate(body)


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "customer_number": st.text(max_size=20) | st.sampled_from(["+919876543210", "+91"]),
            "agent_number": st.none() | st.text(max_size=16),
            "k_number": st.none() | st.text(max_size=16),
            "caller_id": st.none() | st.text(max_size=16),
            "whatsapp": st.booleans() | st.text(max_size=3),
            "call_permission_request": st.none() | st.booleans(),
            "extra": JSON,
        },
    )
)
def test_makecall_body_validation_is_total(body: dict[str, Any]) -> None:
    try:
        parsed = MakeCallBody.model_validate(body)
    except ValidationError as exc:
        errors = exc.errors()
    else:
        assert parsed.customer_number.startswith("+")
        return
    assert errors and all(error["loc"] for error in errors)  # a specific reason for each


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/calls"),
        ("POST", "/api/otp-calls"),
        ("POST", "/api/notifications"),
        ("PUT", "/api/notifications"),
    ],
)
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=st.binary(max_size=300) | JSON.map(lambda v: json.dumps(v).encode()))
async def test_api_answers_any_body_without_a_server_error(
    method: str, path: str, body: bytes
) -> None:
    """Through the real routes (no Knowlarity configured: a valid body gets 503 from the
    service, an invalid one 422, undecodable bytes 400; never 500)."""
    token = "fuzz-admin-token-Qe4Rt7Yu"
    service = KpiService(make_settings({}, admin_api_token=token).knowlarity, CallRegistry())
    app = FastAPI()
    app.include_router(build_router(lambda: service))
    app.add_exception_handler(RequestValidationError, validation_error)  # as create_app does
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.request(
            method,
            path,
            content=body,
            headers={"Authorization": f"Bearer {token}", "content-type": "application/json"},
        )
    assert response.status_code in (400, 422, 503), response.text  # 400: not UTF-8
