"""``voice-agent call``: place a simulated Knowlarity Stream Node call against a server.

Wired into the main CLI with ``register(sub)``. The simulator is imported inside the
command so ``voice-agent --help`` stays fast.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamnode.call import CallReport
    from streamnode.client import ReceivedEvent

    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]


def register(sub: SubParsers) -> None:
    """Add ``call`` to the main ``voice-agent`` parser."""
    _add_call(sub)


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
    from wire.knowlarity import MetadataError, parse_metadata

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

    from streamnode.call import run_call
    from streamnode.client import SimulatorError

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
