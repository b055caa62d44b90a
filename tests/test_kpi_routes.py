"""The /api routes on a FastAPI app served on loopback, calling the fake KPI: the admin
token, request validation, error mapping, and the typed OpenAPI schema."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from config.settings import Settings
from kpi.models import TelephonyEvent
from kpi.routes import build_router
from kpi.service import KpiService
from pipeline.call_record import CallRegistry
from testkit.fake_kpi import AGENT_NUMBER, K_NUMBER, FakeKpi, Reply
from testkit.http import AppServer

pytestmark = pytest.mark.timeout(30)

TOKEN = "admin-token-for-tests-7c1e"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CUSTOMER = "+919876543210"

ROUTES = [
    ("POST", "/api/calls", {"customer_number": CUSTOMER}),
    ("POST", "/api/otp-calls", {"ivr_id": "1000012345", "customer_number": CUSTOMER}),
    ("GET", "/api/notifications", None),
    ("POST", "/api/notifications", {}),
    ("PUT", "/api/notifications", {"enable": "enable"}),
    ("GET", "/api/events", None),
]


@pytest.fixture
async def fake() -> AsyncIterator[FakeKpi]:
    async with FakeKpi() as server:
        yield server


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, KpiService]]:
    service = KpiService(settings.knowlarity, CallRegistry())
    app = FastAPI()
    app.include_router(build_router(lambda: service))
    try:
        async with (
            AppServer(app) as server,
            httpx.AsyncClient(base_url=server.base_url) as http,
        ):
            yield http, service
    finally:
        await service.aclose()


@pytest.fixture
async def api(fake: FakeKpi) -> AsyncIterator[tuple[httpx.AsyncClient, KpiService]]:
    async with serve(fake.settings(admin_api_token=TOKEN)) as pair:
        yield pair


@pytest.fixture
def http(api: tuple[httpx.AsyncClient, KpiService]) -> httpx.AsyncClient:
    return api[0]


async def call(
    http: httpx.AsyncClient,
    method: str,
    path: str,
    body: Any,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return await http.request(method, path, json=body, headers=headers or AUTH)


# --- auth ---------------------------------------------------------------------------------


async def test_routes_refuse_without_a_configured_token(fake: FakeKpi) -> None:
    async with serve(fake.settings()) as (http, _):
        for method, path, body in ROUTES:
            response = await call(http, method, path, body)
            assert response.status_code == 503, path
            assert "ADMIN_API_TOKEN" in response.json()["detail"]
    assert fake.requests == []


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ],
)
async def test_routes_need_the_bearer_token(
    fake: FakeKpi, http: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    for method, path, body in ROUTES:
        response = await http.request(method, path, json=body, headers=headers)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"] == "Bearer"
    assert fake.requests == []


async def test_scheme_is_case_insensitive(http: httpx.AsyncClient) -> None:
    response = await http.get("/api/events", headers={"Authorization": f"bearer {TOKEN}"})
    assert response.status_code == 200


# --- the routes ------------------------------------------------------------------------------


async def test_post_calls(fake: FakeKpi, http: httpx.AsyncClient) -> None:
    response = await call(
        http, "POST", "/api/calls", {"customer_number": CUSTOMER, "whatsapp": True}
    )
    assert response.status_code == 200
    assert response.json() == {
        "success": {"status": "success", "message": "Call successfully placed"}
    }
    [request] = fake.requests
    assert request.path == "/Basic/v1/account/call/makecall"
    assert request.json == {
        "k_number": K_NUMBER,
        "agent_number": AGENT_NUMBER,
        "customer_number": CUSTOMER,
        "channel": "Whatsapp",
        "call_permission_request": "false",
    }


async def test_post_otp_calls(fake: FakeKpi, http: httpx.AsyncClient) -> None:
    response = await call(
        http, "POST", "/api/otp-calls", {"ivr_id": "1000012345", "customer_number": CUSTOMER}
    )
    assert response.status_code == 200
    assert response.json()["success"]["status"] == "initiated"
    assert fake.requests[0].query_string == (
        "ivr_id=1000012345&k_number=%2B911140000000&customer_number=%2B919876543210"
    )


async def test_notifications_routes(fake: FakeKpi, http: httpx.AsyncClient) -> None:
    registered = await call(http, "POST", "/api/notifications", {})
    assert registered.json() == {"message": "Successfully registered."}
    disabled = await call(
        http, "PUT", "/api/notifications", {"knowlarity_number": K_NUMBER, "enable": "disable"}
    )
    assert disabled.json() == {"message": "Successfully disabled."}
    listing = await http.get(
        "/api/notifications",
        params={"knowlarity_number": K_NUMBER, "enabled": "false"},
        headers=AUTH,
    )
    assert listing.status_code == 200
    [entry] = listing.json()["objects"]
    assert entry["k_number"] == K_NUMBER
    assert entry["enable"] is False
    assert entry["app_type"]["name"] == "KONNECT"  # fields we do not model are kept
    assert fake.requests[-1].query_string == "knowlarity_number=%2B911140000000&enabled=False"


async def test_get_events(api: tuple[httpx.AsyncClient, KpiService]) -> None:
    http, service = api
    service.handle_event(TelephonyEvent(event_type="ANSWER", uuid="u-1"), received_at=100.0)
    service.handle_event(TelephonyEvent(event_type="HANGUP", uuid="u-1"), received_at=101.0)
    response = await http.get("/api/events", params={"limit": 1}, headers=AUTH)
    assert response.status_code == 200
    assert response.json() == {
        "configured": True,
        "running": False,
        "connected": False,
        "events": [
            {
                "kind": "telephony",
                "name": "HANGUP",
                "received_at": 101.0,
                "call_id": None,
                "data": {"event_type": "HANGUP", "uuid": "u-1"},
            }
        ],
    }


# --- validation and errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/calls", {"customer_number": "98765"}),
        ("POST", "/api/calls", {"customer_number": CUSTOMER, "agent_number": "x"}),
        ("POST", "/api/calls", {"customer_number": CUSTOMER, "surprise": 1}),
        ("POST", "/api/otp-calls", {"ivr_id": "abc", "customer_number": CUSTOMER}),
        ("POST", "/api/notifications", {"knowlarity_number": ["+91"]}),
        ("PUT", "/api/notifications", {"enable": "maybe"}),
    ],
)
async def test_bad_input_is_422_and_sends_nothing(
    fake: FakeKpi, http: httpx.AsyncClient, method: str, path: str, body: Any
) -> None:
    response = await call(http, method, path, body)
    assert response.status_code == 422
    assert fake.requests == []


async def test_missing_default_number_is_422(fake: FakeKpi) -> None:
    settings = fake.settings(admin_api_token=TOKEN, knowlarity_agent_number=None)
    async with serve(settings) as (http, _):
        response = await call(http, "POST", "/api/calls", {"customer_number": CUSTOMER})
    assert response.status_code == 422
    assert "KNOWLARITY_AGENT_NUMBER" in response.json()["detail"]
    assert fake.requests == []


async def test_knowlarity_error_is_502_with_its_status(
    fake: FakeKpi, http: httpx.AsyncClient
) -> None:
    fake.dnd_numbers.add(CUSTOMER)
    response = await call(http, "POST", "/api/calls", {"customer_number": CUSTOMER})
    assert response.status_code == 502
    detail = response.json()["detail"]
    assert detail["status"] == 200
    assert "Do Not Call registry" in detail["message"]


async def test_knowlarity_timeout_is_504_and_not_retried(fake: FakeKpi) -> None:
    fake.script("POST", "call/makecall", Reply(delay_s=30))
    settings = fake.settings(admin_api_token=TOKEN, knowlarity_timeout_s=0.2)
    async with serve(settings) as (http, _):
        response = await call(http, "POST", "/api/calls", {"customer_number": CUSTOMER})
    assert response.status_code == 504
    assert "not retried" in response.json()["detail"]["message"]
    assert len(fake.requests) == 1


async def test_unconfigured_knowlarity_is_503(fake: FakeKpi) -> None:
    settings = fake.settings(admin_api_token=TOKEN, knowlarity_api_key=None)
    async with serve(settings) as (http, _):
        response = await call(http, "POST", "/api/calls", {"customer_number": CUSTOMER})
        events = await http.get("/api/events", headers=AUTH)
    assert response.status_code == 503
    assert "KNOWLARITY_API_KEY" in response.json()["detail"]
    assert events.status_code == 200  # the event buffer needs no REST keys
    assert fake.requests == []


async def test_openapi_documents_typed_models(http: httpx.AsyncClient) -> None:
    schema = (await http.get("/openapi.json")).json()
    paths = schema["paths"]
    assert set(paths) >= {"/api/calls", "/api/otp-calls", "/api/notifications", "/api/events"}
    assert set(paths["/api/notifications"]) == {"get", "post", "put"}
    names = set(schema["components"]["schemas"])
    assert {
        "MakeCallBody",
        "MakeCallResult",
        "OtpCallBody",
        "OtpCallResult",
        "NotificationList",
        "RegisterNotificationsBody",
        "SetNotificationsBody",
        "MessageResult",
        "RecentEventsResponse",
    } <= names
    call_body = paths["/api/calls"]["post"]["requestBody"]["content"]["application/json"]
    assert call_body["schema"]["$ref"].endswith("/MakeCallBody")
    assert "401" in paths["/api/calls"]["post"]["responses"]


# --- issue 12, finding 3: no credential passes through ----------------------------------

CREDENTIALS = ("k_api_key", "app_api_key", "app_data", "password", "k-api-", "crm-")


async def test_notifications_list_carries_no_credentials(
    fake: FakeKpi, http: httpx.AsyncClient
) -> None:
    fake.register(K_NUMBER)
    fake.register("+911140000001", enable=False)
    response = await call(http, "GET", "/api/notifications", None)
    assert response.status_code == 200
    objects = response.json()["objects"]
    assert [o["k_number"] for o in objects] == [K_NUMBER, "+911140000001"]
    assert objects[0]["app_type"]["name"] == "KONNECT"  # the rest is passed on as sent
    assert all(word not in response.text for word in CREDENTIALS), response.text
