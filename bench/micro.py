"""CPU per unit of work on the server's provider paths, against the fakes in another process.

    python -m bench.micro stt   # DeepgramStream: CPU per forwarded 20 ms frame (20 streams)
    python -m bench.micro llm   # OpenAILLM.stream vs a bare httpx SSE loop: CPU per turn
    python -m bench.micro tts   # CartesiaTTS.synthesize vs a bare httpx SSE loop: CPU per sentence
    python -m bench.micro tts-ws  # the same sentence over SSE and over the WebSocket transport

Run it from the source tree you want to measure: ``python -m`` imports ``pipeline`` from
the working directory, so a patched copy of the tree with ``bench/`` in it works too.
Only this process's CPU is counted (``getrusage``): other work on the machine does not
inflate it the way it inflates latency.
"""

from __future__ import annotations

import argparse
import asyncio
import binascii
import json
import resource
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx

from config.settings import CartesiaSettings, DeepgramSettings, OpenAISettings
from pipeline.agent import TRANSFER_TOOL
from pipeline.providers.base import Message
from pipeline.providers.cartesia_tts import CartesiaTTS
from pipeline.providers.cartesia_tts import request_body as tts_body
from pipeline.providers.cartesia_ws import CartesiaWebSocketTTS
from pipeline.providers.deepgram_stt import DeepgramSTT
from pipeline.providers.openai_llm import OpenAILLM
from pipeline.providers.openai_llm import request_body as llm_body

from . import procs

Env = dict[str, str]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _per_call_ms(fn: Callable[[], Awaitable[int]], n: int) -> float:
    await fn()  # warm up: connections, imports
    started = _cpu()
    for _ in range(n):
        await fn()
    return (_cpu() - started) / n * 1000


async def stt(env: Env, streams: int = 20, seconds: float = 10.0) -> dict[str, float]:
    provider = DeepgramSTT(
        DeepgramSettings(
            api_key=env["DEEPGRAM_API_KEY"], base_url=env["DEEPGRAM_BASE_URL"], language="en"
        )
    )
    silence = bytes(640)
    speech = bytes(range(256)) * 2 + bytes(128)  # loud enough to count as speech

    async def one() -> int:
        frames = 0
        async with provider.stream(16000) as stream:

            async def drain() -> None:
                async for _ in stream.events():
                    pass

            drainer = asyncio.create_task(drain())
            start = time.monotonic()
            while time.monotonic() - start < seconds:
                stream.send_audio(speech if (frames // 50) % 3 == 0 else silence)
                frames += 1
                await asyncio.sleep(max(0.0, start + frames * 0.02 - time.monotonic()))
        drainer.cancel()
        return frames

    started = _cpu()
    frames = sum(await asyncio.gather(*(one() for _ in range(streams))))
    return {"frames": frames, "cpu_us_per_frame": round((_cpu() - started) / frames * 1e6, 1)}


def _history() -> list[Message]:
    messages: list[Message] = [{"role": "system", "content": "You are a phone agent. " * 20}]
    for _ in range(4):
        messages.append({"role": "user", "content": "hello there"})
        messages.append({"role": "assistant", "content": "You said: hello there. Anything else?"})
    messages.append({"role": "user", "content": "hello there"})
    return messages


async def llm(env: Env, n: int = 200) -> dict[str, float]:
    base, key = env["OPENAI_BASE_URL"], env["OPENAI_API_KEY"]
    provider = OpenAILLM(OpenAISettings(api_key=key, base_url=base, model="gpt-4o-mini"))
    messages, tools = _history(), [TRANSFER_TOOL]
    http = httpx.AsyncClient(timeout=10)

    async def sdk() -> int:
        return len([event async for event in provider.stream(messages, tools)])

    async def raw() -> int:
        body = llm_body("gpt-4o-mini", messages, tools, temperature=0.6, max_tokens=300)
        deltas = 0
        headers = {"Authorization": f"Bearer {key}"}
        url = base + "/chat/completions"
        async with http.stream("POST", url, json=body, headers=headers) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    for choice in json.loads(line[6:]).get("choices", ()):
                        deltas += bool(choice["delta"].get("content"))
        return deltas

    try:
        return {
            "client_cpu_ms_per_turn": round(await _per_call_ms(sdk, n), 2),
            "bare_httpx_cpu_ms_per_turn": round(await _per_call_ms(raw, n), 2),
        }
    finally:
        await http.aclose()


async def tts(env: Env, n: int = 150, text: str = "You said: hello there.") -> dict[str, float]:
    base, key, voice = env["CARTESIA_BASE_URL"], env["CARTESIA_API_KEY"], env["CARTESIA_VOICE_ID"]
    http = httpx.AsyncClient(timeout=10)
    version = "2025-04-16"
    provider = CartesiaTTS(
        CartesiaSettings(api_key=key, voice_id=voice, base_url=base, version=version), http=http
    )
    headers = {"X-API-Key": key, "Cartesia-Version": version, "Accept": "text/event-stream"}

    async def lines() -> int:
        return sum([len(pcm) async for pcm in provider.synthesize(text, 16000)])

    async def raw() -> int:
        body = tts_body(
            text=text,
            model="sonic-3",
            voice_id=voice,
            language="en",
            sample_rate=16000,
            context_id=uuid.uuid4().hex,
        )
        total, buf = 0, b""
        url = base.rstrip("/") + "/tts/sse"
        async with http.stream("POST", url, json=body, headers=headers) as response:
            async for data in response.aiter_raw():
                *events, buf = (buf + data).split(b"\n\n")
                for event in events:
                    for line in event.split(b"\n"):
                        if line.startswith(b"data:"):
                            payload = json.loads(line[5:])
                            if payload.get("type") == "chunk":
                                total += len(binascii.a2b_base64(payload["data"]))
        return total

    try:
        return {
            "client_cpu_ms_per_sentence": round(await _per_call_ms(lines, n), 2),
            "bare_httpx_cpu_ms_per_sentence": round(await _per_call_ms(raw, n), 2),
        }
    finally:
        await http.aclose()


async def tts_ws(env: Env, n: int = 150, text: str = "You said: hello there.") -> dict[str, float]:
    """CPU per sentence: SSE (a request each) against the WebSocket (a context per reply)."""
    base, key, voice = env["CARTESIA_BASE_URL"], env["CARTESIA_API_KEY"], env["CARTESIA_VOICE_ID"]
    settings = CartesiaSettings(api_key=key, voice_id=voice, base_url=base, version="2025-04-16")
    http = httpx.AsyncClient(timeout=10)
    sse = CartesiaTTS(settings, http=http)
    ws = CartesiaWebSocketTTS(settings)

    async def over_sse() -> int:
        return sum([len(pcm) async for pcm in sse.synthesize(text, 16000)])

    async def over_ws() -> int:
        return sum([len(pcm) async for pcm in ws.synthesize(text, 16000)])

    async def reply_of_three() -> int:
        async with ws.context(16000) as ctx:
            for _ in range(3):
                await ctx.push(text)
            await ctx.end()
            return sum([len(pcm) async for pcm in ctx.audio()])

    try:
        return {
            "sse_cpu_ms_per_sentence": round(await _per_call_ms(over_sse, n), 2),
            "websocket_cpu_ms_per_sentence": round(await _per_call_ms(over_ws, n), 2),
            "websocket_cpu_ms_per_sentence_in_a_3_sentence_reply": round(
                await _per_call_ms(reply_of_three, n // 3) / 3, 2
            ),
        }
    finally:
        await ws.aclose()
        await http.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.micro")
    parser.add_argument("what", choices=("stt", "llm", "tts", "tts-ws"))
    args = parser.parse_args()
    fast = procs.Latencies(
        llm_first_token_ms=0, llm_per_token_ms=0, tts_first_audio_ms=0, tts_realtime_factor=0
    )
    latencies = procs.Latencies() if args.what == "stt" else fast
    runs: dict[str, Callable[[Env], Coroutine[Any, Any, dict[str, float]]]] = {
        "stt": stt,
        "llm": llm,
        "tts": tts,
        "tts-ws": tts_ws,
    }
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "fakes.log"
        with procs.fakes(latencies, log, max_records=500) as (_, env):
            import uvloop

            result: dict[str, float] = uvloop.run(runs[args.what](env))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
