"""The HTTP side of issue 12: no request body is read before the admin token is checked,
none beyond API_MAX_BODY_BYTES at all (finding 2); what /health, /ready and
/openapi.json tell the public; token and secret lengths; the uvicorn pin; and a bare
``uvicorn server:app`` getting MAX_FRAME_BYTES and a TRUSTED_PROXIES warning (10)."""

from __future__ import annotations

import asyncio
import re
import sys
import tomllib
from pathlib import Path

import httpx
import pytest
import uvicorn
from pydantic import ValidationError

from bench.attacks import big_post
from server.application import MIN_UVICORN
from tests.conftest import StartServer, VoiceServer, free_port, make_settings
from tests.test_stream_input import oversized_frame_header, raw_handshake, read_close_code

pytestmark = pytest.mark.timeout(60)

ADMIN = "http-hardening-admin-Rm5Tq8Wy"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024


async def answer_to_partial_body(
    server: VoiceServer, length: int, headers: dict[str, str], path: str = "/api/calls"
) -> bytes:
    """Send the headers of a ``length``-byte POST and only 1 KiB of its body, then wait:
    a server that reads the whole body before answering never answers."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", int(server.http_url.rsplit(":", 1)[1])
    )
    lines = [f"POST {path} HTTP/1.1", "Host: x", "Content-Type: application/json"]
    lines += [f"Content-Length: {length}", *(f"{k}: {v}" for k, v in headers.items())]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + b"x" * 1024)
    try:
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()
    return head


@pytest.fixture
async def server(start_server: StartServer) -> VoiceServer:
    voice: VoiceServer = await start_server(greeting="Hello.", admin_api_token=ADMIN)
    return voice


# --- finding 2 ----------------------------------------------------------------------------


async def test_unauthenticated_body_is_never_read(server: VoiceServer) -> None:
    head = await answer_to_partial_body(server, 50 * MIB, {})
    assert head.startswith(b"HTTP/1.1 401")
    assert b"connection: close" in head.lower()


async def test_oversized_body_is_refused_before_it_is_read(server: VoiceServer) -> None:
    head = await answer_to_partial_body(server, 50 * MIB, AUTH)
    assert head.startswith(b"HTTP/1.1 413")
    head = await answer_to_partial_body(server, 50 * MIB, {}, path="/health")  # any route
    assert head.startswith(b"HTTP/1.1 413")


async def test_chunked_body_is_cut_at_the_limit(start_server: StartServer) -> None:
    server = await start_server(greeting="Hello.", admin_api_token=ADMIN, api_max_body_bytes=4096)
    result = await big_post(server.http_url, 8 * MIB, "127.0.0.1", token=ADMIN, chunked=True)
    assert result.status == "413"
    assert result.body_bytes_sent < 8 * MIB  # the server stopped reading


async def test_small_bodies_still_work(server: VoiceServer) -> None:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        bad = await http.post("/api/calls", json={"customer_number": "nope"}, headers=AUTH)
        assert bad.status_code == 422  # validated as before
        missing = await http.post("/api/calls", json={"customer_number": "+919876543210"})
        assert missing.status_code == 401


@pytest.mark.parametrize("body", [b"Infinity", b"NaN", b'{"customer_number": -Infinity}'])
async def test_non_json_numbers_are_bad_input_not_a_server_error(
    server: VoiceServer, body: bytes
) -> None:
    """Found by the /api fuzzer: FastAPI's 422 echoed the input back and could not encode
    Infinity, so bad input got a 500. Now a 422 with the reasons, and no input echoed."""
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        response = await http.post(
            "/api/calls", content=body, headers={**AUTH, "content-type": "application/json"}
        )
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail and all(set(error) == {"loc", "msg", "type"} for error in detail)


async def test_api_without_admin_token_is_refused_before_the_body(
    start_server: StartServer,
) -> None:
    server = await start_server(greeting="Hello.")
    head = await answer_to_partial_body(server, 50 * MIB, {})
    assert head.startswith(b"HTTP/1.1 503")


# --- finding 10: what is public --------------------------------------------------------------

PROXIED = {"X-Forwarded-For": "203.0.113.9"}  # as the world reaches a server behind ngrok


async def test_health_and_ready_say_little_to_the_public(server: VoiceServer) -> None:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        public = await http.get("/health", headers=PROXIED)
        assert public.status_code == 200 and public.json() == {"status": "ok"}
        assert (await http.get("/ready", headers=PROXIED)).json() == {"status": "ready"}
        admin = await http.get("/health", headers={**PROXIED, **AUTH})
        assert {"providers", "missing", "active_calls", "loop_lag_ms"} <= set(admin.json())
        local = await http.get("/health")  # this machine: the operator, the bench
        assert "active_calls" in local.json()
        ready = (await http.get("/ready")).json()
        assert {"status": "ready", "active_calls": 0, "max_calls": 200}.items() <= ready.items()


async def test_openapi_needs_the_admin_token_and_docs_hold_no_schema(server: VoiceServer) -> None:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        assert (await http.get("/openapi.json")).status_code == 401
        schema = await http.get("/openapi.json", headers=AUTH)
        assert schema.status_code == 200 and "/api/calls" in schema.json()["paths"]
        docs = await http.get("/docs")  # a page that asks for the token, then the schema
        assert docs.status_code == 200 and "/api/calls" not in docs.text
        assert (await http.get("/redoc")).status_code == 404


# --- finding 10: lengths, secrets, the uvicorn pin ----------------------------------------------


@pytest.mark.parametrize("name", ["voice_ws_token", "admin_api_token"])
def test_tokens_have_a_minimum_length(name: str) -> None:
    with pytest.raises(ValidationError, match="at least 16"):
        make_settings({}, **{name: "short-token-123"})  # 15 characters
    assert make_settings({}, **{name: "x" * 16}) is not None
    assert make_settings({}, **{name: "   "}) is not None  # blank: unset


@pytest.mark.parametrize(
    "name",
    [
        "deepgram_api_key",
        "openai_api_key",
        "cartesia_api_key",
        "knowlarity_api_key",
        "knowlarity_sr_api_key",
        "openai_fallback_api_key",
    ],
)
def test_secrets_too_short_to_mask_are_refused(name: str) -> None:
    """A 3-character key was never masked in logs (masking needs 4+); such values are now
    refused as secrets, so every configured secret is masked."""
    with pytest.raises(ValidationError, match="too short to be a key"):
        make_settings({}, **{name: "abc"})
    settings = make_settings({}, **{name: "abcd1234"})
    assert "abcd1234" in settings.secrets()


def test_uvicorn_lower_bound_is_what_websockets_sansio_needs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (spec,) = [d for d in project["project"]["dependencies"] if d.startswith("uvicorn")]
    found = re.search(r">=\s*([0-9.]+)", spec)
    assert found is not None, spec
    pinned = tuple(int(p) for p in found.group(1).split("."))
    assert pinned >= MIN_UVICORN  # was >=0.30, before websockets-sansio existed (0.35)
    installed = tuple(int(p) for p in uvicorn.__version__.split(".")[:3])
    assert installed >= MIN_UVICORN


# --- finding 10: bare uvicorn ------------------------------------------------------------


async def test_bare_uvicorn_gets_max_frame_bytes_and_a_proxy_warning(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "uvicorn.log"
    env = {"PATH": "/usr/bin:/bin", "MAX_FRAME_BYTES": "65536", "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "uvicorn",
            "server:app",
            "--port",
            str(port),
            "--ws",
            "websockets-sansio",
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            async with httpx.AsyncClient() as http:
                for _ in range(200):
                    try:
                        if (await http.get(f"http://127.0.0.1:{port}/ready")).status_code:
                            break
                    except httpx.TransportError:
                        await asyncio.sleep(0.05)
            sock = await asyncio.to_thread(raw_handshake, port)
            with sock:
                sock.sendall(oversized_frame_header(MIB))  # 1 MiB > MAX_FRAME_BYTES, < 16 MiB
                code = await asyncio.to_thread(read_close_code, sock)
        finally:
            proc.terminate()
            await proc.wait()
    assert code == 1009  # refused after the header: uvicorn's own 16 MiB default was lifted
    output = log.read_text()
    assert (
        "uvicorn believes X-Forwarded-For from 127.0.0.1, ::1 but TRUSTED_PROXIES is empty"
        in output
    )
