"""A small abuse run from outside, against a real ``voice-agent serve``: honest calls are
served while idle sockets, bad-token floods, a huge POST and fast-streaming callers hit
the same server at the same time. Counts and outcomes are asserted, never timings; the
full-size run with figures is ``python -m bench abuse`` (docs/reliability.md)."""

from __future__ import annotations

import asyncio

import pytest

from bench.attacks import (
    bad_tokens,
    big_post,
    fast_callers,
    honest_call,
    idle_sockets,
    sources,
)
from tests.conftest import StartServeProcess

pytestmark = pytest.mark.timeout(180)

TOKEN = "abuse-stream-token-Jw4Nq8Zr2Lx6"
ADMIN = "abuse-admin-token-Pv3Hs7Ke1Dy5"
MIB = 1024 * 1024


async def test_honest_calls_are_served_during_an_abuse_run(
    start_serve_process: StartServeProcess,
) -> None:
    server = await start_serve_process(
        VOICE_WS_TOKEN=TOKEN,
        ADMIN_API_TOKEN=ADMIN,
        GREETING="Hello.",
        VOICE_IP_MAX_PENDING="8",
        VOICE_IP_AUTH_FAILURES_PER_MIN="10",
    )
    good = f"{server.url}/{TOKEN}"
    idle_from, bad_from, post_from, fast_from = (
        sources(1, 2),
        sources(3, 2),
        sources(5, 1),
        sources(6, 2),
    )
    honest, idle, refused, posts, fast = await asyncio.gather(
        asyncio.gather(*(honest_call(good, f"honest-{n}") for n in range(3))),
        idle_sockets(good, 40, idle_from, seconds=6.0),
        bad_tokens(server.url, per_s=40, seconds=2.0, addresses=bad_from),
        asyncio.gather(
            big_post(server.http_url, 20 * MIB, post_from[0]),
            big_post(server.http_url, 20 * MIB, post_from[0], token=ADMIN),
            big_post(server.http_url, 20 * MIB, post_from[0], token=ADMIN, chunked=True),
        ),
        fast_callers(f"{good}?sample_rate=8000", 3, speedup=10, seconds=3.0, addresses=fast_from),
    )
    # Every honest call heard its greeting and the answer to its question.
    assert [call.error for call in honest] == [None] * 3
    assert all(call.served for call in honest)
    # Idle sockets: never spoken to, every stream closed 1008 (no frame in time); past
    # VOICE_IP_MAX_PENDING per address refused (429), and their addresses soon banned (403).
    assert idle.greeted == 0
    assert set(idle.close_codes) == {1008}
    assert idle.outcomes["accepted"] <= 8 * len(idle_from) + 10 * len(idle_from)
    assert idle.outcomes["HTTP 403"] > 0
    assert set(idle.outcomes) <= {"accepted", "HTTP 429", "HTTP 403"}
    # Bad tokens: refused (403) every time, never a stream; both addresses banned.
    assert set(refused) == {"403"}
    # The huge POSTs were answered before their bodies were read.
    assert [p.status for p in posts] == ["401", "413", "413"]
    # (what did get out sits in loopback socket buffers: the server stopped reading)
    assert all(p.body_bytes_sent < 20 * MIB for p in posts), posts
    # Fast callers streamed, and were metered (the server keeps their calls up).
    assert fast.outcomes["streamed"] == 3
    output = server.output()
    assert output.count("Caller audio arrives faster than real time") == 3
    # Refused handshakes did not flood the log; the flooding addresses were banned.
    assert output.count("Refused a /voice handshake") <= 10
    banned = {
        line.split("Banning ")[1].split()[0] for line in output.splitlines() if "Banning " in line
    }
    assert set(bad_from) <= banned
    assert "Traceback" not in output
