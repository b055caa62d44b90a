"""Stream authentication, the IP allow-list, and secrets kept out of logs and answers.

The rules are plain functions in :mod:`server.security`, tested here directly; then the
running app shows them at the handshake (HTTP 403 before any WebSocket is accepted), and
a real ``voice-agent serve`` shows uvicorn's own handshake log line keeps the token out.
(The whole run's captured logs are scanned for every configured secret by tests/conftest.)
"""

from __future__ import annotations

import logging

import httpx
import pytest
from pydantic import ValidationError
from websockets.exceptions import InvalidStatus

from server.security import (
    UrlRedactingFilter,
    client_ip,
    ip_allowed,
    parse_networks,
    redact_urls,
    tokens_match,
)
from streamnode.client import StreamNodeClient
from tests.conftest import StartServeProcess, StartServer, VoiceServer, make_settings

pytestmark = pytest.mark.timeout(60)

# Distinctive, so the end-of-run log scan cannot miss it or match it by accident.
TOKEN = "vwstok-Qz7Kp3Xw9Lm2Rt8Vy4Nc"
ADMIN = "adm-tok-Hq6Ws1Ez8Jd5Bu3Fg"
TRUSTED = parse_networks(["127.0.0.1/32", "10.0.0.0/8"])


# --- pure rules -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected", "ok"),
    [
        (TOKEN, TOKEN, True),
        (TOKEN + "x", TOKEN, False),
        (TOKEN[:-1], TOKEN, False),
        ("", TOKEN, False),
        (None, TOKEN, False),
        ("", "", False),  # no configured token never means "matches"
        ("ünïcode-tøken", "ünïcode-tøken", True),
    ],
)
def test_tokens_match(given: str | None, expected: str, ok: bool) -> None:
    assert tokens_match(given, expected) is ok


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("203.0.113.9", [], "203.0.113.9"),
        ("203.0.113.9", ["198.51.100.1"], "203.0.113.9"),  # untrusted peer: header ignored
        ("127.0.0.1", ["198.51.100.1"], "198.51.100.1"),
        ("127.0.0.1", ["198.51.100.1, 10.1.2.3"], "198.51.100.1"),  # skip trusted hops
        ("127.0.0.1", ["1.1.1.1, 198.51.100.1"], "198.51.100.1"),  # left of it is forgeable
        ("127.0.0.1", ["1.1.1.1", "198.51.100.1"], "198.51.100.1"),  # repeated headers
        ("127.0.0.1", [], "127.0.0.1"),
        ("127.0.0.1", ["10.1.2.3"], "10.1.2.3"),  # all trusted: the leftmost
        ("127.0.0.1", ["garbage"], None),
        ("127.0.0.1", ["198.51.100.1:4567"], "198.51.100.1"),
        ("127.0.0.1", ["[2001:db8::1]:443"], "2001:db8::1"),
        ("::ffff:127.0.0.1", ["198.51.100.1"], "198.51.100.1"),  # dual-stack socket
        (None, ["198.51.100.1"], None),
    ],
)
def test_client_ip(peer: str | None, forwarded: list[str], client: str | None) -> None:
    assert client_ip(peer, forwarded, TRUSTED) == client


def test_ip_allowed() -> None:
    allowed = parse_networks(["198.51.100.0/24", " 2001:db8::/32 ", ""])
    assert ip_allowed("198.51.100.7", allowed)
    assert ip_allowed("2001:db8::5", allowed)
    assert not ip_allowed("203.0.113.1", allowed)
    assert not ip_allowed(None, allowed)
    assert not ip_allowed("not-an-ip", allowed)
    assert ip_allowed(None, ())  # no allow-list: everyone


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        (f'127.0.0.1:5 - "WebSocket /voice/{TOKEN}" [accepted]', '"WebSocket /voice/***"'),
        (f'"WebSocket /voice?token={TOKEN}&sample_rate=8000" 403', "token=***&sample_rate"),
        (f"GET /voice/{TOKEN}?sample_rate=8000", "/voice/***?sample_rate=8000"),
        (f"/voice?Token={TOKEN}", "Token=***"),
    ],
)
def test_redact_urls(text: str, redacted: str) -> None:
    out = redact_urls(text)
    assert TOKEN not in out and redacted in out
    assert redact_urls("nothing to see /health") == "nothing to see /health"


def test_url_filter_keeps_access_log_args_a_tuple() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", f"/voice/{TOKEN}", "1.1", 404),
        None,
    )
    assert UrlRedactingFilter().filter(record)
    assert isinstance(record.args, tuple) and record.args[2] == "/voice/***"
    assert TOKEN not in record.getMessage()


def test_settings_lists_and_secrets() -> None:
    settings = make_settings(
        {"VOICE_ALLOWED_IPS": "198.51.100.0/24, 2001:db8::1", "TRUSTED_PROXIES": "127.0.0.1"},
        voice_ws_token=TOKEN,
    )
    assert settings.stream.voice_allowed_ips == ("198.51.100.0/24", "2001:db8::1")
    assert settings.stream.trusted_proxies == ("127.0.0.1",)
    assert TOKEN in settings.secrets()
    assert settings.stream.max_frame_bytes == 1024 * 1024
    with pytest.raises(ValidationError):
        make_settings({"VOICE_ALLOWED_IPS": "10.0.0.0/8,nonsense"})


# --- the handshake --------------------------------------------------------------------------


async def handshake_status(url: str, headers: dict[str, str] | None = None) -> int:
    """101 if the stream opened and a greeting came, else the HTTP status of the refusal."""
    node = StreamNodeClient(sample_rate=16000)
    try:
        await node.connect(url, extra_headers=headers)
    except InvalidStatus as exc:
        return exc.response.status_code
    async with node:
        await node.send_metadata({"callid": "call-auth"})
        await node.wait_for("playAudio", timeout=5)
    return 101


@pytest.fixture
async def locked(start_server: StartServer) -> VoiceServer:
    server: VoiceServer = await start_server(greeting="Hello.", voice_ws_token=TOKEN)
    return server


@pytest.mark.parametrize(
    ("suffix", "status"),
    [
        ("", 403),
        ("/wrong-token", 403),
        (f"/{TOKEN}x", 403),
        ("?token=wrong", 403),
        (f"?token={TOKEN[:-1]}", 403),
        (f"/{TOKEN}", 101),
        (f"?token={TOKEN}", 101),
        (f"/{TOKEN}?sample_rate=8000", 101),
    ],
)
async def test_stream_token_is_checked_before_accept(
    suffix: str, status: int, locked: VoiceServer, caplog: pytest.LogCaptureFixture
) -> None:
    assert await handshake_status(locked.url + suffix) == status
    if status == 403:
        assert locked.state.registry.recent() == []  # refused before any call began
        assert any("missing or wrong stream token" in r.getMessage() for r in caplog.records)
    assert all(TOKEN not in r.getMessage() for r in caplog.records)


@pytest.fixture
def only_our_proxy_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    """Uvicorn itself trusts X-Forwarded-For from 127.0.0.1 unless told otherwise (as
    ``voice-agent serve`` does); switch that off so TRUSTED_PROXIES alone decides."""
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "")


@pytest.mark.usefixtures("only_our_proxy_rules")
async def test_ip_allow_list_behind_a_trusted_proxy(start_server: StartServer) -> None:
    server = await start_server(
        greeting="Hello.", voice_allowed_ips="198.51.100.0/24", trusted_proxies="127.0.0.1"
    )
    assert await handshake_status(server.url, {"X-Forwarded-For": "198.51.100.7"}) == 101
    assert await handshake_status(server.url, {"X-Forwarded-For": "203.0.113.1"}) == 403
    assert await handshake_status(server.url) == 403  # the proxy itself is not allowed
    spoofed = {"X-Forwarded-For": "198.51.100.7, 203.0.113.1"}  # client wrote the left one
    assert await handshake_status(server.url, spoofed) == 403


@pytest.mark.usefixtures("only_our_proxy_rules")
async def test_forwarded_for_is_ignored_from_untrusted_peers(start_server: StartServer) -> None:
    server = await start_server(greeting="Hello.", voice_allowed_ips="127.0.0.1/32")
    assert await handshake_status(server.url, {"X-Forwarded-For": "203.0.113.1"}) == 101
    server = await start_server(greeting="Hello.", voice_allowed_ips="198.51.100.0/24")
    assert await handshake_status(server.url, {"X-Forwarded-For": "198.51.100.7"}) == 403


async def test_health_and_errors_carry_no_secret(start_server: StartServer) -> None:
    server = await start_server(greeting="Hello.", voice_ws_token=TOKEN, admin_api_token=ADMIN)
    secrets = server.state.settings.secrets()
    assert TOKEN in secrets and ADMIN in secrets
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        bodies = [
            (await http.get("/health")).text,
            (await http.get("/ready")).text,
            (await http.get("/api/events", headers={"Authorization": "Bearer nope"})).text,
            (await http.get(f"/voice/{TOKEN}")).text,  # plain HTTP to the WebSocket route
        ]
    for body in bodies:
        assert all(secret not in body for secret in secrets), body


async def test_admin_routes_need_the_admin_token(start_server: StartServer) -> None:
    server = await start_server(greeting="Hello.", admin_api_token=ADMIN)
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        assert (await http.get("/api/events")).status_code == 401
        bad = {"Authorization": f"Bearer {ADMIN}x"}
        assert (await http.get("/api/events", headers=bad)).status_code == 401
        good = {"Authorization": f"Bearer {ADMIN}"}
        assert (await http.get("/api/events", headers=good)).status_code == 200


async def test_serve_logs_the_handshake_without_the_token(
    start_serve_process: StartServeProcess,
) -> None:
    server = await start_serve_process(
        VOICE_WS_TOKEN=TOKEN,
        VOICE_ALLOWED_IPS="198.51.100.0/24",
        TRUSTED_PROXIES="127.0.0.1",  # as behind a local ngrok agent
        GREETING="Hello.",
    )
    via_proxy = {"X-Forwarded-For": "198.51.100.7"}
    assert await handshake_status(f"{server.url}/{TOKEN}", via_proxy) == 101
    assert await handshake_status(f"{server.url}?token={TOKEN}", via_proxy) == 101
    assert await handshake_status(f"{server.url}/not-the-token", via_proxy) == 403
    assert await handshake_status(f"{server.url}/{TOKEN}") == 403  # not from the allow-list
    output = server.output()
    assert "address 127.0.0.1 is not in VOICE_ALLOWED_IPS" in output
    assert '"WebSocket /voice/***" [accepted]' in output
    assert '"WebSocket /voice?token=***" [accepted]' in output
    assert '"WebSocket /voice/***" 403' in output
    assert TOKEN not in output


def test_uvicorn_records_are_masked_before_uvicorn_handlers_see_them() -> None:
    """`voice-agent serve` prints uvicorn.error through uvicorn's own handler, not ours."""
    from server.application import create_app

    create_app(make_settings({}, voice_ws_token=TOKEN, admin_api_token=ADMIN))
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    handler = Keep()
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    try:
        try:
            raise RuntimeError(f"connect to https://x/?key={ADMIN} failed")
        except RuntimeError:
            logger.exception("Exception in ASGI application for /voice/%s", TOKEN)
    finally:
        logger.removeHandler(handler)
    (record,) = seen
    assert TOKEN not in record.getMessage()
    assert record.exc_text is not None and ADMIN not in record.exc_text
