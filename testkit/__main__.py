"""Run the fakes as their own process, for the benchmark.

    python -m testkit serve --llm-first-token-ms 200 --llm-per-token-ms 30

Once every fake listens, one JSON line with the environment (DEEPGRAM_BASE_URL, ...) is
printed to stdout; the process then serves until SIGINT or SIGTERM and exits 0. Timelines:
``GET <OPENAI_BASE_URL without /v1>/_fake/timeline``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable, Sequence

from .deepgram_engine import VadSettings
from .fake_cartesia import FakeCartesia
from .fake_deepgram import FakeDeepgram
from .fake_openai import FakeOpenAI
from .providers import DEFAULT_KEYS, FakeProviders


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m testkit", description="Fake providers.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the fake providers until SIGINT/SIGTERM")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--deepgram-port", type=int, default=0, help="0 = any free port")
    serve.add_argument("--openai-port", type=int, default=0)
    serve.add_argument("--cartesia-port", type=int, default=0)
    serve.add_argument("--llm-first-token-ms", type=float, default=200.0)
    serve.add_argument("--llm-per-token-ms", type=float, default=30.0)
    serve.add_argument("--tts-first-audio-ms", type=float, default=150.0)
    serve.add_argument("--tts-realtime-factor", type=float, default=4.0, help="0 = no pacing")
    endpointing = serve.add_mutually_exclusive_group()
    endpointing.add_argument(
        "--stt-endpointing-from-client",
        action="store_true",
        help="honour the endpointing the client asks for (the default)",
    )
    endpointing.add_argument(
        "--stt-endpointing-ms", type=int, default=None, help="override the client's endpointing"
    )
    serve.add_argument("--stt-result-delay-ms", type=float, default=0.0)
    serve.add_argument("--stt-threshold-rms", type=float, default=VadSettings().threshold_rms)
    serve.add_argument("--stt-default-text", default="hello there")
    serve.add_argument("--max-records", type=int, default=500, help="per fake, oldest dropped")
    serve.add_argument("--log-level", default="WARNING")
    serve.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="auto: uvloop if installed",
    )
    return parser


def _providers(args: argparse.Namespace) -> FakeProviders:
    deepgram = FakeDeepgram(
        api_key=DEFAULT_KEYS["deepgram"],
        default_text=args.stt_default_text,
        vad=VadSettings(threshold_rms=args.stt_threshold_rms),
        result_delay_ms=args.stt_result_delay_ms,
        endpointing_override_ms=args.stt_endpointing_ms,
        keep_audio=False,
        max_records=args.max_records,
        host=args.host,
        port=args.deepgram_port,
    )
    openai = FakeOpenAI(
        api_key=DEFAULT_KEYS["openai"],
        first_token_ms=args.llm_first_token_ms,
        per_token_ms=args.llm_per_token_ms,
        max_records=args.max_records,
        host=args.host,
        port=args.openai_port,
    )
    cartesia = FakeCartesia(
        api_key=DEFAULT_KEYS["cartesia"],
        first_audio_ms=args.tts_first_audio_ms,
        realtime_factor=args.tts_realtime_factor,
        max_records=args.max_records,
        host=args.host,
        port=args.cartesia_port,
    )
    return FakeProviders(deepgram=deepgram, openai=openai, cartesia=cartesia)


async def _serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with _providers(args) as fakes:
            print(json.dumps(fakes.env()), flush=True)
            await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    with asyncio.Runner(loop_factory=_loop_factory(args.loop)) as runner:
        runner.run(_serve(args))
    return 0


def _loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise
        return None
    return uvloop.new_event_loop


if __name__ == "__main__":
    sys.exit(main())
