"""The ``voice-agent`` command: run the server, or place a simulated Knowlarity call.

Heavy modules (uvicorn, the app, numpy) are imported inside the sub-commands so that
``voice-agent --help`` stays fast and works even when the app cannot be imported.
Every sub-command sets ``func``: it takes the parsed arguments and returns the exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from server.simulated_call import CallReport
    from server.simulator import ReceivedEvent

    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voice-agent", description="AI voice agent for the Knowlarity IVR Stream Node."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(sub)
    _add_call(sub)
    _register_extensions(sub)
    return parser


def _register_extensions(sub: SubParsers) -> None:
    """Sub-commands owned by other packages: each adds its parsers with ``register(sub)``."""
    from kpi.cli import register as register_kpi

    register_kpi(sub)


# --- serve -------------------------------------------------------------------------


def _add_serve(sub: SubParsers) -> None:
    p = sub.add_parser("serve", help="run the WebSocket server (uvicorn server:app)")
    p.add_argument("--host", help="bind address (default: HOST, else 0.0.0.0)")
    p.add_argument("--port", type=int, help="port (default: PORT, else 8000)")
    p.add_argument("--reload", action="store_true", help="restart on code changes (dev)")
    p.add_argument(
        "--access-log",
        action="store_true",
        help="log every HTTP request (off by default; /voice token paths are redacted)",
    )
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn
    from pydantic import ValidationError

    from config import get_settings

    try:
        settings = get_settings()
    except ValidationError as exc:
        print(f"error: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    from pipeline.agent_file import AgentFileError
    from server.local_stack import load_agent, local_installed
    from server.provider_choice import choose_providers

    try:  # a broken agent file stops here with its line number, not in a traceback
        load_agent(settings, choose_providers(settings, local_installed()))
    except AgentFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    options: dict[str, Any] = {
        "host": args.host or settings.host,
        "port": settings.port if args.port is None else args.port,
        "log_level": settings.log_level.lower(),
        "ws": "websockets-sansio",
        # Refuse an oversized WebSocket message (1009) after reading only its frame header,
        # before the server buffers it; uvicorn's own default is 16 MiB.
        "ws_max_size": settings.max_frame_bytes,
        "access_log": args.access_log,
        # X-Forwarded-For is believed from TRUSTED_PROXIES only (uvicorn would trust
        # 127.0.0.1 by default), so uvicorn's client address and our IP check agree.
        "forwarded_allow_ips": ",".join(settings.trusted_proxies),
    }
    # SIGTERM drains the calls first (server.lifecycle hooks uvicorn's signal handler).
    uvicorn.run("server:app", reload=args.reload, **options)
    return 0


# --- call --------------------------------------------------------------------------


def _add_call(sub: SubParsers) -> None:
    p = sub.add_parser(
        "call",
        help="place a simulated Knowlarity Stream Node call against a server",
        description="Connect like the Stream Node does, send metadata, stream a WAV as the "
        "caller, then silence; print every event and a latency summary. Exit 0 when the "
        "bot spoke and everything it sent was valid.",
    )
    p.add_argument("url", metavar="WS_URL", help="e.g. ws://localhost:8000/voice")
    p.add_argument("--wav", type=Path, help="caller audio: mono 16-bit WAV at the node's rate")
    meta = p.add_mutually_exclusive_group()
    meta.add_argument(
        "--metadata",
        type=_metadata_arg,
        help="JSON object or Python dict, sent in the node's form "
        "(default: a generated sim-<hex> call)",
    )
    meta.add_argument("--raw-metadata", metavar="TEXT", help="first text frame exactly as given")
    p.add_argument(
        "--sample-rate", type=int, help="node sampling rate (default: the WAV's, else 16000)"
    )
    p.add_argument(
        "--silence-after",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds of silence after the WAV (default 5); the call then stays on while the "
        "bot is still talking",
    )
    p.add_argument("--save-audio", type=Path, metavar="OUT.wav", help="write the bot's audio")
    p.add_argument("--no-realtime", action="store_true", help="send audio as fast as possible")
    p.add_argument(
        "--header",
        type=_header_arg,
        action="append",
        default=[],
        metavar="K=V",
        help="extra HTTP header for the handshake (repeatable)",
    )
    p.add_argument("--frame-ms", type=int, default=20, help="audio frame size (default 20)")
    p.set_defaults(func=_call)


def _metadata_arg(text: str) -> dict[str, Any]:
    """A JSON object or Python dict (bare or JSON-wrapped), checked like the server will."""
    from server.protocol import MetadataError, parse_metadata

    try:
        meta = parse_metadata(text)
    except MetadataError as exc:
        raise argparse.ArgumentTypeError(f"unusable metadata: {exc}") from exc
    fields = {
        "callid": meta.call_id,
        "virtual_number": meta.virtual_number,
        "customer_number": meta.customer_number,
        "call_type": meta.call_type,
    }
    return {**{k: v for k, v in fields.items() if v}, **meta.extra}


def _header_arg(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected K=V, got {text!r}")
    return name.strip(), value.strip()


def _call(args: argparse.Namespace) -> int:
    from websockets.exceptions import WebSocketException

    from server.simulated_call import run_call
    from server.simulator import SimulatorError

    start = time.monotonic()

    def show(event: ReceivedEvent) -> None:
        print(format_event(event, start), flush=True)

    try:
        report = asyncio.run(
            run_call(
                args.url,
                wav=args.wav,
                metadata=args.raw_metadata if args.raw_metadata is not None else args.metadata,
                sample_rate=args.sample_rate,
                seconds_of_silence_after=args.silence_after,
                save_audio=args.save_audio,
                on_event=show,
                realtime=not args.no_realtime,
                extra_headers=args.header or None,
                frame_ms=args.frame_ms,
            )
        )
    except (SimulatorError, OSError, TimeoutError, WebSocketException) as exc:
        print(f"error: {exc or type(exc).__name__}", file=sys.stderr)
        return 1
    print(format_report(report))
    return 0 if report.ok else 1


def format_event(event: ReceivedEvent, start: float) -> str:
    """One line per event; never the base64 payload."""
    head = f"[+{(event.t - start) * 1000:7.0f} ms] {event.kind:<10}"
    if event.kind == "playAudio":
        if event.wav is None:
            return f"{head} invalid WAV ({event.raw_len:,} B)"
        return (
            f"{head} {event.duration_ms:6.0f} ms  {event.wav.sample_rate} Hz  ({event.raw_len:,} B)"
        )
    if event.kind == "transfer":
        return f"{head} -> {event.destination}"
    if event.kind == "unknown":
        return f"{head} ({event.raw_len:,} B)"
    return head


def format_report(report: CallReport) -> str:
    lines = [f"--- call {report.call_id or '(custom metadata)'} -> {report.url}"]
    lines.append(f"greeting latency: {_ms(report.greeting_latency_ms)}")
    for i, ((begin, end), latency) in enumerate(
        zip(report.speech_segments, report.reply_latencies_ms, strict=True), 1
    ):
        lines.append(f"reply {i} (speech {begin:.2f}-{end:.2f} s): {_ms(latency)}")
    if report.heard is None:
        lines.append("heard by the server: (not available)")
    else:
        said = " | ".join(f'"{text}"' for text in report.heard) or "(nothing)"
        lines.append(f"heard by the server: {said}")
    lines.append("events: " + " ".join(f"{k}={n}" for k, n in report.counts.items()))
    saved = f" (saved to {report.saved_audio})" if report.saved_audio else ""
    lines.append(f"bot audio: {report.bot_audio_ms:.0f} ms{saved}")
    if report.transfer_destination:
        lines.append(f"transferred to: {report.transfer_destination}")
    who = "server" if report.closed_by_server else "simulator"
    lines.append(f"closed: code {report.close_code} by {who}")
    lines.extend(f"problem: {p}" for p in report.problems)
    if report.hint:
        lines.append(f"hint: {report.hint}")
    lines.append("result: OK" if report.ok else "result: FAILED")
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "none" if value is None else f"{value:.0f} ms"


if __name__ == "__main__":
    sys.exit(main())
