"""First-turn cost with and without warm connections (fakes, server and caller in-process).

    python -m bench.warm                       # 5 calls per mode and idle time
    python -m bench.warm --trials 9 --idle 0,8 --json

Each trial starts fresh fakes (the bench's scripted latencies) and a fresh server with
``WARM_CONNECTIONS`` 0 or 2, waits for ``/ready``, lets the server idle ``--idle``
seconds (8 s is past httpx's 5 s keep-alive, what a quiet server sees between calls),
then places one call and times its first turn as the server logs it (final transcript to
first audio). Cartesia runs over SSE here: the HTTP keep-alive pool is what warming
changes (the default WebSocket transport opens its socket at start-up either way, with
the greeting's cache). Two kinds of figure come out:

* new connections the first turn had to open (LLM, TTS), from the fakes' records:
  deterministic, the same on any box;
* the first-turn latency: wall-clock, meaningful only on a quiet box. On loopback a new
  connection costs only TCP set-up and the client's pool work; against the real services
  it also costs a TLS handshake (one more round trip), which this bench cannot show.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from config.settings import Settings
from server.application import create_app
from streamnode.call import load_caller_audio
from streamnode.caller_line import CallerLine
from streamnode.client import StreamNodeClient
from testkit import FakeCartesia, FakeDeepgram, FakeOpenAI, FakeProviders
from testkit.http import AppServer
from testkit.providers import DEFAULT_KEYS

from .procs import Latencies

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
RATE = 16000


def _fakes(lat: Latencies) -> FakeProviders:
    return FakeProviders(
        deepgram=FakeDeepgram(api_key=DEFAULT_KEYS["deepgram"]),
        openai=FakeOpenAI(
            api_key=DEFAULT_KEYS["openai"],
            first_token_ms=lat.llm_first_token_ms,
            per_token_ms=lat.llm_per_token_ms,
        ),
        cartesia=FakeCartesia(
            api_key=DEFAULT_KEYS["cartesia"],
            first_audio_ms=lat.tts_first_audio_ms,
            realtime_factor=lat.tts_realtime_factor,
        ),
    )


async def _wait_ready(base: str, timeout_s: float = 20.0) -> None:
    async with httpx.AsyncClient(base_url=base) as http, asyncio.timeout(timeout_s):
        while (await http.get("/ready")).status_code != 200:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def trial(warm: int, idle_s: float, speech: bytes) -> dict[str, Any]:
    """One fresh server, one call; the first turn's latency and new connections."""
    async with _fakes(Latencies()) as fakes:
        values: dict[str, Any] = {k.lower(): v for k, v in fakes.env().items()}
        values.update(log_level="WARNING", warm_connections=warm, warm_interval_s=3.0)
        values.update(cartesia_transport="sse")  # an HTTP pool to warm (see above)
        settings = Settings(_env_file=None, **values)
        app = create_app(settings)
        async with AppServer(app, lifespan="on", ws="websockets-sansio") as server:
            await _wait_ready(server.base_url)
            await asyncio.sleep(idle_s)
            llm_before, tts_before = len(fakes.openai.requests), len(fakes.cartesia.requests)
            async with StreamNodeClient(sample_rate=RATE, keep_audio=False) as node:
                await node.connect(server.base_url.replace("http", "ws", 1) + "/voice")
                await node.send_metadata({"callid": f"warm-{warm}-{idle_s}"})
                await node.wait_for("playAudio", timeout=10)
                async with CallerLine(node, RATE) as line:
                    line.say(speech)
                    end = await line.said(timeout=10)
                    await node.wait_for("playAudio", after=end, timeout=10)
                    # The session records the turn once its reply is all sent: stay on.
                    registry = app.state.voice.registry
                    latencies: list[float] = []
                    async with asyncio.timeout(15):
                        while not latencies:
                            latencies = [
                                ms for r in registry.recent() for ms in r.turn_latencies_ms
                            ]
                            await asyncio.sleep(0.05)
            llm = list(fakes.openai.requests)[llm_before:]
            tts = list(fakes.cartesia.requests)[tts_before:]
            return {
                "first_turn_ms": latencies[0] if latencies else None,
                "llm_new_connection": bool(llm and llm[0].new_connection),
                "tts_new_connection": bool(tts and tts[0].new_connection),
            }


async def run(trials: int, idles: Sequence[float]) -> dict[str, Any]:
    speech, _ = load_caller_audio(FIXTURES / "question.wav", RATE)
    out: dict[str, Any] = {}
    for idle in idles:
        for warm in (0, 2):
            rows = [await trial(warm, idle, speech) for _ in range(trials)]
            times = [r["first_turn_ms"] for r in rows if r["first_turn_ms"] is not None]
            out[f"idle {idle:g} s, WARM_CONNECTIONS={warm}"] = {
                "first_turn_ms_median": round(statistics.median(times), 1) if times else None,
                "first_turn_ms": times,
                "llm_new_connections": sum(r["llm_new_connection"] for r in rows),
                "tts_new_connections": sum(r["tts_new_connection"] for r in rows),
                "trials": trials,
            }
    return out


def markdown(result: dict[str, Any]) -> str:
    rows = [
        "| case | first turns that opened a new LLM / TTS connection "
        "| first turn, final → first audio, median (ms) |",
        "|---|---|---|",
    ]
    for case, r in result.items():
        rows.append(
            f"| {case} | {r['llm_new_connections']} / {r['tts_new_connections']} of {r['trials']} "
            f"| {r['first_turn_ms_median']} |"
        )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.warm")
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--idle", default="0,8", help="seconds of idle before the call")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.trials, [float(x) for x in args.idle.split(",")]))
    print(json.dumps(result, indent=1) if args.json else markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
