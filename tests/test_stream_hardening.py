"""The ``/voice`` findings of issue 12, each shown from outside against a running server:
secure by default (1), call ids (5), ``sample_rate`` (7), inbound audio metering (8), one
stray byte (9), and the per-address limits and log throttles (10)."""

from __future__ import annotations

import asyncio
import os
import random
import struct
import sys
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from audio.wav import read_wav_file
from bench.attacks import handshake_status, sources
from server.exposure import is_local_request, is_loopback_host, stream_auth_problem
from server.voice import call_sample_rate
from streamnode.client import StreamNodeClient
from testkit import FakeProviders, llm
from tests.caller import wait_until_quiet
from tests.conftest import FIXTURES, StartServer, VoiceServer, free_port, make_settings

pytestmark = pytest.mark.timeout(90)

TOKEN = "hardening-stream-token-Xk29Pq"
ROOT = Path(__file__).resolve().parent.parent


async def status_with(url: str, headers: dict[str, str] | None = None) -> int:
    """101 if the stream opened, else the HTTP status of the refusal."""
    try:
        ws = await connect(url, additional_headers=headers, open_timeout=5)
    except InvalidStatus as exc:
        return exc.response.status_code
    await ws.close()
    return 101


async def greeted_call(url: str, call_id: str) -> StreamNodeClient:
    node = StreamNodeClient(sample_rate=16000)
    await node.connect(url)
    await node.send_metadata({"callid": call_id})
    await node.wait_for("playAudio", timeout=5)
    return node


# --- finding 1: secure by default ------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("example.com", False),
    ],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_stream_auth_problem() -> None:
    open_ = make_settings({}).stream
    assert stream_auth_problem("127.0.0.1", open_) is None
    assert stream_auth_problem(None, open_) is None  # unknown: the request check guards
    problem = stream_auth_problem("0.0.0.0", open_)
    assert problem is not None and "\n" not in problem
    assert "VOICE_WS_TOKEN" in problem and "VOICE_AUTH=none" in problem
    token = make_settings({}, voice_ws_token=TOKEN).stream
    assert stream_auth_problem("0.0.0.0", token) is None
    allow = make_settings({"VOICE_ALLOWED_IPS": "198.51.100.0/24"}).stream
    assert stream_auth_problem("0.0.0.0", allow) is None
    assert stream_auth_problem("0.0.0.0", make_settings({"VOICE_AUTH": "NONE"}).stream) is None


def test_is_local_request() -> None:
    assert is_local_request("127.0.0.1", ["host", "upgrade"])
    assert not is_local_request("127.0.0.1", ["host", "X-Forwarded-For"])  # ngrok, nginx
    assert not is_local_request("127.0.0.1", ["forwarded"])
    assert not is_local_request("203.0.113.5", ["host"])
    assert not is_local_request(None, [])


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


async def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[int | None, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        async with asyncio.timeout(30):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        return None, out.decode(errors="replace")  # it started serving: the bug
    return proc.returncode, out.decode(errors="replace")


async def test_serve_refuses_a_public_address_without_stream_auth(tmp_path: Path) -> None:
    voice_agent = str(Path(sys.executable).with_name("voice-agent"))
    argv = [voice_agent, "serve", "--host", "0.0.0.0", "--port", str(free_port())]
    code, out = await _run(argv, tmp_path, _env())
    assert code == 2, out
    (line,) = out.strip().splitlines()
    assert line.startswith("error: refusing to serve /voice on 0.0.0.0")
    assert "VOICE_WS_TOKEN" in line


async def test_bare_uvicorn_refuses_a_public_address_before_binding(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "uvicorn", "server:app", "--host", "0.0.0.0"]
    code, out = await _run([*argv, "--port", str(free_port())], tmp_path, _env())
    assert code == 3, out  # uvicorn's start-up failure
    assert "refusing to serve /voice on 0.0.0.0 without stream authentication" in out
    assert "Traceback" not in out
    assert "Uvicorn running" not in out  # it never listened


async def test_without_auth_only_local_handshakes_are_served(start_server: StartServer) -> None:
    """Finding 1: /voice was open to anyone; now, with no token, only to this machine.
    A local proxy (the ngrok agent) adds X-Forwarded-For: refused, it carries the world."""
    server = await start_server(greeting="Hello.")
    assert await status_with(server.url) == 101
    assert await status_with(server.url, {"X-Forwarded-For": "203.0.113.9"}) == 403
    assert await status_with(server.url, {"Forwarded": "for=203.0.113.9"}) == 403
    opened = await start_server(greeting="Hello.", voice_auth="none")
    assert await status_with(opened.url, {"X-Forwarded-For": "203.0.113.9"}) == 101


# --- finding 5: call ids ---------------------------------------------------------------


async def test_a_second_live_call_with_the_same_id_gets_its_own_record(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_server(greeting="Hello.")
    first = await greeted_call(server.url, "dup-call")
    record = server.state.registry.get("dup-call")
    second = await greeted_call(server.url, "dup-call")
    assert server.state.registry.get("dup-call") is record  # not replaced
    assert sorted(r.call_id for r in server.state.registry.active()) == ["dup-call", "dup-call.2"]
    assert any("already live" in r.getMessage() for r in caplog.records)
    await first.close()
    await second.close()


async def test_a_forged_call_id_cannot_forge_log_lines(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_server(greeting="Hello.")
    forged = "x\n2026-12-03 10:00:00,000 [call_id=admin] [SERVER] forged line"
    node = await greeted_call(server.url, forged)
    await node.close()
    (record,) = server.state.registry.recent()
    assert record.call_id.startswith("gen-")
    for entry in caplog.records:
        assert "\n" not in entry.getMessage()
        assert "\n" not in str(getattr(entry, "call_id", ""))
    assert any(r.getMessage().startswith("Refused callid") for r in caplog.records)


# --- finding 7: sample_rate -----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "rate"),
    [
        ("8000", 8000),
        ("8k", 8000),
        ("16.0k", 16000),
        (" 48K ", 48000),
        ("infk", 16000),
        ("1e400k", 16000),
        ("1e400", 16000),
        ("nan", 16000),
        ("-8000", 16000),
        ("1_6000", 16000),
        ("８０００", 16000),  # fullwidth digits: int() would take them
        ("9" * 5000, 16000),
        ("44.1k", 16000),  # a real rate, not one the Stream Node has
        ("", 16000),
    ],
)
def test_sample_rate_query_never_raises(value: str, rate: int) -> None:
    assert call_sample_rate(value, 16000) == rate


@pytest.mark.parametrize("value", ["infk", "1e400k", "nan"])
async def test_bad_sample_rate_is_ignored_cleanly(
    value: str, start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_server(greeting="Hello.")
    node = await greeted_call(f"{server.url}?sample_rate={value}", "call-rate")
    await node.close()
    assert server.state.registry.get("call-rate") is not None
    assert not any(r.exc_info or "Exception in ASGI" in r.getMessage() for r in caplog.records)
    assert any("Ignoring sample_rate=" in r.getMessage() for r in caplog.records)


# --- finding 8: inbound audio against real time ------------------------------------------


async def test_audio_faster_than_real_time_is_not_forwarded(
    fakes: FakeProviders, start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_server(greeting="Hello.", inbound_audio_burst_s=1.0)
    node = await greeted_call(server.url, "call-fast")
    started = time.monotonic()
    frame = bytes(640)  # 20 ms at 16 kHz
    for n in range(1000):  # 20 s of audio at ~10x real time
        await node.send_audio(frame)
        await asyncio.sleep(max(0.0, started + n * 0.002 - time.monotonic()))
    elapsed = time.monotonic() - started
    await asyncio.sleep(0.5)  # what was forwarded reaches the fake
    await node.close()
    (connection,) = fakes.deepgram.connections
    forwarded_s = connection.audio_bytes / 32000
    assert 0.5 < forwarded_s <= 1.0 + (elapsed + 0.6) * 1.05
    lines = [r for r in caplog.records if "faster than real time" in r.getMessage()]
    assert len(lines) == 1 and getattr(lines[0], "call_id", "") == "call-fast"


# --- finding 9: one stray byte ----------------------------------------------------------


def line_noise(n_bytes: int, rng: random.Random) -> bytearray:
    """A phone line's hiss: a few units of amplitude, far below speech."""
    count = n_bytes // 2
    return bytearray(struct.pack(f"<{count}h", *(rng.randint(-40, 40) for _ in range(count))))


async def test_one_corrupt_frame_does_not_cost_the_caller_the_rest_of_the_call(
    fakes: FakeProviders, start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Garbage text, a 3-byte frame, then speech: the caller is still answered. With the
    stray byte carried on, every later sample was shifted by a byte: the hiss of the line
    became loud noise, speech never ended for the STT, and no reply ever came."""
    fakes.deepgram.utterances.append("What time do you open tomorrow?")
    fakes.openai.replies.append(llm.Text("We open at nine."))
    server = await start_server(greeting="Hello.")
    rng = random.Random(9)
    node = await greeted_call(server.url, "call-stray")
    await wait_until_quiet(node)
    speech = bytearray(read_wav_file(FIXTURES / "question.wav").pcm)
    noise = line_noise(len(speech), rng)
    mixed = struct.pack(
        f"<{len(speech) // 2}h",
        *(
            max(-32768, min(32767, a + b))
            for a, b in zip(
                struct.unpack(f"<{len(speech) // 2}h", speech),
                struct.unpack(f"<{len(noise) // 2}h", noise),
                strict=True,
            )
        ),
    )
    audio = bytes(line_noise(16000, rng)) + mixed + bytes(line_noise(32000 * 3, rng))
    await node._conn().send("{not json")
    await node.send_audio(b"\x01\x02\x03")
    started = time.monotonic()
    for n, offset in enumerate(range(0, len(audio), 640)):
        await node.send_audio(audio[offset : offset + 640])
        await asyncio.sleep(max(0.0, started + (n + 1) * 0.02 - time.monotonic()))
    request = (await fakes.openai.wait_for_requests(1, timeout_s=10))[0]
    assert request.messages[-1]["content"] == "What time do you open tomorrow?"
    await node.wait_for("playAudio", after=request.received_at, timeout=5)
    await node.close()
    strays = [r for r in caplog.records if r.getMessage().startswith("Dropped a stray byte")]
    assert len(strays) == 1


# --- finding 10 and the per-address limits ------------------------------------------------


async def test_refused_handshakes_are_logged_once_per_address_and_minute(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_server(greeting="Hello.", voice_ws_token=TOKEN)
    (source,) = sources(40, 1)
    statuses = [await handshake_status(f"{server.url}/wrong", source) for _ in range(60)]
    assert set(statuses) == {"403"}
    refused = [r.getMessage() for r in caplog.records if "Refused a /voice" in r.getMessage()]
    assert len(refused) == 2  # was: one WARNING per handshake; now one per reason and minute
    assert "wrong stream token" in refused[0] and "banned" in refused[1]
    banned = [r for r in caplog.records if r.getMessage().startswith(f"Banning {source}")]
    assert len(banned) == 1
    # The honest caller, from another address, is not affected.
    node = await greeted_call(f"{server.url}/{TOKEN}", "call-after-flood")
    await node.close()


async def test_silent_streams_are_closed_and_capped_per_address(
    start_server: StartServer,
) -> None:
    server = await start_server(greeting="Hello.", voice_ws_token=TOKEN, voice_ip_max_pending=3)
    (source,) = sources(41, 1)
    url = f"{server.url}/{TOKEN}"
    silent = [await connect(url, local_addr=(source, 0)) for _ in range(3)]
    assert await handshake_status(url, source) == "429"  # a fourth waits for none of them
    for ws in silent:
        await ws.wait_closed()
        assert ws.close_code == 1008  # no frame within the metadata wait: no Stream Node
    assert server.state.lifecycle.calls.connections == 0  # they never held a call slot
    assert server.state.registry.recent() == []  # nor became calls
    assert await handshake_status(url, source) == "101"


async def test_a_full_pending_pool_evicts_the_flooding_address_first(
    start_server: StartServer,
) -> None:
    server: VoiceServer = await start_server(greeting="Hello.", voice_ws_token=TOKEN, max_calls=4)
    assert server.state.pending_pool.capacity == 16
    url = f"{server.url}/{TOKEN}"
    idle_from, honest_from = sources(42, 1)[0], sources(43, 1)[0]
    honest = await connect(url, local_addr=(honest_from, 0))
    flood = [await connect(url, local_addr=(idle_from, 0)) for _ in range(30)]
    assert server.state.pending_pool.evictions >= 15
    assert not any(ws.close_code for ws in flood[-10:])
    await honest.send('{"callid": "call-survivor"}')  # late, but still in the pool
    async with asyncio.timeout(5):
        await honest.recv()  # the greeting
    assert server.state.registry.get("call-survivor") is not None
    await honest.close()
    for ws in flood:
        await ws.close()
