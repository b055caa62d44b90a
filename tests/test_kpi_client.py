"""The KPI REST client against the fake on loopback, through the real httpx client:
exact requests, every documented error shape, validation before sending, retries."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kpi.client import KnowlarityClient, KpiConfig
from kpi.errors import ConfigError, InputError, KnowlarityError, KnowlarityTransportError
from testkit.fake_kpi import AGENT_NUMBER, K_NUMBER, FakeKpi, Reply

pytestmark = pytest.mark.timeout(30)

CUSTOMER = "+919876543210"
INVALID_NUMBER = "The knowlarity number(+919000000000) or API key is invalid."


@pytest.fixture
async def fake() -> AsyncIterator[FakeKpi]:
    async with FakeKpi() as server:
        yield server


@pytest.fixture
async def client(fake: FakeKpi) -> AsyncIterator[KnowlarityClient]:
    async with KnowlarityClient(fake.client_config()) as kpi:
        yield kpi


def assert_kpi_headers(headers: Any, fake: FakeKpi) -> None:
    assert headers["x-api-key"] == fake.api_key
    assert headers["authorization"] == fake.sr_api_key  # bare, no "Bearer"
    assert headers["content-type"] == "application/json"


# --- exact requests --------------------------------------------------------------------------


async def test_makecall_request(fake: FakeKpi, client: KnowlarityClient) -> None:
    result = await client.makecall(CUSTOMER)
    assert result.success.message == "Call successfully placed"
    assert result.raw() == {"success": {"status": "success", "message": "Call successfully placed"}}
    [request] = fake.requests
    assert (request.method, request.path) == ("POST", "/Basic/v1/account/call/makecall")
    assert_kpi_headers(request.headers, fake)
    assert request.json == {
        "k_number": K_NUMBER,
        "agent_number": AGENT_NUMBER,
        "customer_number": CUSTOMER,
    }


async def test_makecall_whatsapp_request(fake: FakeKpi) -> None:
    config = fake.client_config(channel="Enterprise")
    async with KnowlarityClient(config) as client:
        await client.makecall(
            CUSTOMER,
            agent_number="+919810000002",
            k_number="+911140000009",
            caller_id="+911140000001",
            whatsapp=True,
            call_permission_request=True,
        )
    [request] = fake.requests
    assert request.path == "/Enterprise/v1/account/call/makecall"
    assert request.json == {
        "k_number": "+911140000009",
        "agent_number": "+919810000002",
        "customer_number": CUSTOMER,
        "caller_id": "+911140000001",
        "channel": "Whatsapp",
        "call_permission_request": "true",
    }


async def test_otpcall_request(fake: FakeKpi, client: KnowlarityClient) -> None:
    result = await client.otpcall(
        "1000012345", CUSTOMER, whatsapp=True, call_permission_request=False
    )
    assert result.success.status == "initiated"
    assert result.success.call_id
    [request] = fake.requests
    assert (request.method, request.path) == ("GET", "/Basic/v1/account/otpcall")
    assert_kpi_headers(request.headers, fake)
    assert request.query_string == (
        "ivr_id=1000012345&k_number=%2B911140000000&customer_number=%2B919876543210"
        "&channel=Whatsapp&call_permission_request=false"
    )
    assert request.body == b""


async def test_register_notifications_request(fake: FakeKpi, client: KnowlarityClient) -> None:
    assert (await client.register_notifications()).message == "Successfully registered."
    assert (await client.register_notifications(["+911140000001", K_NUMBER])).message
    first, second = fake.requests
    assert (first.method, first.path) == ("POST", "/Basic/v1/account/notifications")
    assert_kpi_headers(first.headers, fake)
    assert first.json == {"knowlarity_number": [K_NUMBER]}
    assert second.json == {"knowlarity_number": ["+911140000001", K_NUMBER]}
    assert [r["k_number"] for r in fake.registrations] == [K_NUMBER, "+911140000001"]


async def test_enable_disable_request(fake: FakeKpi, client: KnowlarityClient) -> None:
    fake.register(K_NUMBER, enable=False)
    assert (await client.set_notifications(True)).message == "Successfully enabled."
    assert fake.registrations[0]["enable"] is True
    assert (await client.set_notifications(False, K_NUMBER)).message == "Successfully disabled."
    first, second = fake.requests
    assert (first.method, first.path) == ("PUT", "/Basic/v1/account/notifications")
    assert_kpi_headers(first.headers, fake)
    assert first.json == {"knowlarity_number": K_NUMBER, "enable": "enable"}
    assert second.json == {"knowlarity_number": K_NUMBER, "enable": "disable"}


async def test_list_pages_through_meta_next(fake: FakeKpi, client: KnowlarityClient) -> None:
    fake.page_size = 2
    numbers = [f"+91114000000{i}" for i in range(5)]
    for i, number in enumerate(numbers):
        fake.register(number, enable=i != 3)
    listing = await client.list_notifications()
    assert [r.k_number for r in listing.objects] == numbers
    assert listing.meta is not None
    assert listing.meta.total_count == 5
    assert [r.query_string for r in fake.requests] == ["", "limit=2&offset=2", "limit=2&offset=4"]
    assert all(r.method == "GET" and r.path.endswith("/notifications") for r in fake.requests)
    assert_kpi_headers(fake.requests[0].headers, fake)


async def test_list_filters_are_encoded(fake: FakeKpi, client: KnowlarityClient) -> None:
    fake.page_size = 1
    fake.register(K_NUMBER, enable=True)
    fake.register("+911140000001", enable=False)
    listing = await client.list_notifications(knowlarity_number=K_NUMBER, enabled=True)
    assert [r.k_number for r in listing.objects] == [K_NUMBER]
    assert fake.requests[0].query_string == "knowlarity_number=%2B911140000000&enabled=True"
    pages = [page async for page in client.notification_pages(enabled=False)]
    assert [len(p.objects) for p in pages] == [1]
    assert fake.requests[-1].query_string == "enabled=False"


# --- errors ----------------------------------------------------------------------------------


async def test_error_with_http_200_dnd(fake: FakeKpi) -> None:
    fake.dnd_numbers.add(CUSTOMER)
    async with KnowlarityClient(fake.client_config()) as client:
        with pytest.raises(KnowlarityError) as caught:
            await client.makecall(CUSTOMER)
    assert caught.value.status == 200
    assert "Do Not Call registry" in caught.value.message
    assert fake.placed_calls == []


@pytest.mark.parametrize(
    ("reply", "status", "message"),
    [
        (
            Reply(
                status=400,
                json={"error": {"message": "Not allowed to send call permission request."}},
            ),
            400,
            "Not allowed to send call permission request.",
        ),
        (
            Reply(
                status=200,
                json={
                    "error": {
                        "message": "Sent call permission request to customer. "
                        "Please try calling after sometime"
                    }
                },
            ),
            200,
            "Sent call permission request",
        ),
        (
            Reply(status=200, json={"error": {"message": "Invalid APIKey for this SR number"}}),
            200,
            "Invalid APIKey for this SR number",
        ),
        (Reply(status=500, raw="<html>oops</html>", content_type="text/html"), 500, "HTTP 500"),
    ],
)
async def test_makecall_error_shapes(
    fake: FakeKpi, client: KnowlarityClient, reply: Reply, status: int, message: str
) -> None:
    fake.script("POST", "call/makecall", reply)
    with pytest.raises(KnowlarityError) as caught:
        await client.makecall(CUSTOMER)
    assert (caught.value.status, message in caught.value.message) == (status, True)
    assert len(fake.requests) == 1  # an answered error is never retried


async def test_wrong_keys(fake: FakeKpi) -> None:
    async with KnowlarityClient(fake.client_config(api_key="wrong-key-000")) as client:
        with pytest.raises(KnowlarityError) as call_error:
            await client.makecall(CUSTOMER)
        with pytest.raises(KnowlarityError) as list_error:
            await client.list_notifications()
    assert call_error.value.status == 401
    assert call_error.value.message == "Invalid API key for this SR number"
    assert list_error.value.status == 401
    assert list_error.value.message == "Client name, authorization or knowlarity number is wrong."


async def test_register_field_error(fake: FakeKpi, client: KnowlarityClient) -> None:
    fake.script(
        "POST",
        "notifications",
        Reply(
            status=400,
            json={"error": {"knowlarity_number": INVALID_NUMBER}},
        ),
    )
    with pytest.raises(KnowlarityError) as caught:
        await client.register_notifications(["+919000000000"])
    assert caught.value.status == 400
    assert caught.value.message == (
        "knowlarity_number: The knowlarity number(+919000000000) or API key is invalid."
    )


async def test_enable_unregistered_and_broken_json_error(
    fake: FakeKpi, client: KnowlarityClient
) -> None:
    with pytest.raises(KnowlarityError) as unregistered:
        await client.set_notifications(True)
    assert unregistered.value.status == 401
    # The reference's 401 sample body, as printed: unterminated JSON.
    fake.register(K_NUMBER)
    broken = '{\n"message": "Client name,authorization or knowlarity number iswrong.\n}'
    fake.script("PUT", "notifications", Reply(status=401, raw=broken))
    with pytest.raises(KnowlarityError) as caught:
        await client.set_notifications(True)
    assert caught.value.status == 401
    assert caught.value.message == "Client name,authorization or knowlarity number iswrong."
    assert caught.value.body == broken


async def test_otpcall_error(fake: FakeKpi, client: KnowlarityClient) -> None:
    fake.script(
        "GET",
        "otpcall",
        Reply(
            status=400, json={"error": {"message": "Not allowed to send call permission request."}}
        ),
    )
    with pytest.raises(KnowlarityError, match="Not allowed"):
        await client.otpcall("1000012345", CUSTOMER, whatsapp=True, call_permission_request=True)


# --- validation before sending -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda c: c.makecall("9876543210"), "customer_number"),
        (lambda c: c.makecall(CUSTOMER, agent_number="+91-98100"), "agent_number"),
        (lambda c: c.makecall(CUSTOMER, k_number="1140000000"), "k_number"),
        (lambda c: c.makecall(CUSTOMER, caller_id="+1"), "caller_id"),
        (lambda c: c.otpcall("10x", CUSTOMER), "ivr_id"),
        (lambda c: c.otpcall("1000012345", "+91 98765 43210"), "customer_number"),
        (lambda c: c.register_notifications(["+91114"]), "knowlarity_number"),
        (lambda c: c.set_notifications(True, "911140000000"), "knowlarity_number"),
        (lambda c: c.list_notifications(knowlarity_number="abc"), "knowlarity_number"),
    ],
)
async def test_bad_input_sends_nothing(
    fake: FakeKpi, client: KnowlarityClient, call: Any, field: str
) -> None:
    with pytest.raises(InputError) as caught:
        await call(client)
    assert caught.value.field == field
    assert fake.requests == []


async def test_missing_defaults_and_keys_send_nothing(fake: FakeKpi) -> None:
    async with KnowlarityClient(fake.client_config(k_number=None, agent_number=None)) as client:
        with pytest.raises(InputError, match="KNOWLARITY_NUMBER is not set"):
            await client.makecall(CUSTOMER, agent_number=AGENT_NUMBER)
        with pytest.raises(InputError, match="KNOWLARITY_AGENT_NUMBER is not set"):
            await client.makecall(CUSTOMER, k_number=K_NUMBER)
        with pytest.raises(InputError, match="KNOWLARITY_NUMBER"):
            await client.register_notifications()
    async with KnowlarityClient(fake.client_config(api_key=None)) as client:
        with pytest.raises(ConfigError, match="KNOWLARITY_API_KEY"):
            await client.makecall(CUSTOMER)
    assert fake.requests == []


# --- retries ----------------------------------------------------------------------------------


async def test_makecall_is_not_retried_after_a_timeout(fake: FakeKpi) -> None:
    fake.script("POST", "call/makecall", Reply(delay_s=30))
    config = fake.client_config(timeout_s=0.2, retries=3)
    async with KnowlarityClient(config) as client:
        with pytest.raises(KnowlarityTransportError) as caught:
            await client.makecall(CUSTOMER)
    assert caught.value.maybe_sent
    assert caught.value.timed_out
    assert caught.value.attempts == 1
    assert "not retried" in caught.value.message
    # Knowlarity got it and placed the call; the customer is rung exactly once.
    assert len(fake.requests_to("call/makecall")) == 1
    assert len(fake.placed_calls) == 1


async def test_makecall_is_not_retried_after_a_5xx(fake: FakeKpi, client: KnowlarityClient) -> None:
    fake.script("POST", "call/makecall", Reply(status=503, raw="busy", content_type="text/plain"))
    with pytest.raises(KnowlarityError) as caught:
        await client.makecall(CUSTOMER)
    assert caught.value.status == 503
    assert len(fake.requests) == 1


async def test_otpcall_is_not_retried_after_a_timeout(fake: FakeKpi) -> None:
    fake.script("GET", "otpcall", Reply(delay_s=30))
    async with KnowlarityClient(fake.client_config(timeout_s=0.2)) as client:
        with pytest.raises(KnowlarityTransportError):
            await client.otpcall("1000012345", CUSTOMER)
    assert len(fake.requests_to("otpcall")) == 1


async def test_list_retries_timeouts_and_5xx(
    fake: FakeKpi, caplog: pytest.LogCaptureFixture
) -> None:
    fake.register(K_NUMBER)
    fake.script(
        "GET",
        "notifications",
        Reply(delay_s=30),
        Reply(status=502, raw="Bad Gateway", content_type="text/plain"),
    )
    async with KnowlarityClient(fake.client_config(timeout_s=0.2, retries=2)) as client:
        with caplog.at_level(logging.WARNING, logger="voice.KPI"):
            listing = await client.list_notifications()
    assert [r.k_number for r in listing.objects] == [K_NUMBER]
    assert len(fake.requests) == 3
    assert caplog.text.count("retry") == 2


async def test_list_gives_up_after_the_retries(fake: FakeKpi) -> None:
    down = Reply(status=503, raw="down", content_type="text/plain")
    fake.script("GET", "notifications", down, down, down)
    async with KnowlarityClient(fake.client_config(retries=2)) as client:
        with pytest.raises(KnowlarityError) as caught:
            await client.list_notifications()
    assert caught.value.status == 503
    assert len(fake.requests) == 3


def _closed_port() -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()  # nothing listens there now: connections are refused
    return port


async def test_makecall_retries_a_refused_connection() -> None:
    """The request never left, so a retry cannot ring the customer twice."""
    port = _closed_port()
    server = FakeKpi(port=port)
    sleeps: list[float] = []

    async def sleep_then_come_up(delay: float) -> None:
        sleeps.append(delay)
        if len(sleeps) == 1:
            await server.start()  # Knowlarity comes up on that port during the backoff

    config = KpiConfig(
        api_key=server.api_key,
        sr_api_key=server.sr_api_key,
        base_url=f"http://127.0.0.1:{port}",
        k_number=K_NUMBER,
        agent_number=AGENT_NUMBER,
        retries=2,
        retry_backoff_s=0.001,
    )
    try:
        async with KnowlarityClient(config, sleep=sleep_then_come_up) as client:
            result = await client.makecall(CUSTOMER)
    finally:
        await server.stop()
    assert result.success.status == "success"
    assert len(sleeps) == 1
    assert len(server.placed_calls) == 1


async def test_refused_connection_gives_up_after_retries() -> None:
    sleeps: list[float] = []

    async def record_sleep(delay: float) -> None:
        sleeps.append(delay)
        await asyncio.sleep(0)

    config = KpiConfig(
        api_key="key-1234",
        sr_api_key="sr-key-1234",
        base_url=f"http://127.0.0.1:{_closed_port()}",
        k_number=K_NUMBER,
        agent_number=AGENT_NUMBER,
        retries=2,
    )
    async with KnowlarityClient(config, sleep=record_sleep) as client:
        with pytest.raises(KnowlarityTransportError) as caught:
            await client.makecall(CUSTOMER)
    assert not caught.value.maybe_sent
    assert caught.value.attempts == 3
    assert len(sleeps) == 2
    assert sleeps[0] <= sleeps[1] * 2
