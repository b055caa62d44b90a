"""The ``voice-agent`` command: ``serve`` here; ``call`` (:mod:`streamnode.cli`) and ``kpi``
(:mod:`kpi.cli`) register themselves.

Heavy modules (uvicorn, the app, numpy) are imported inside the sub-commands so that
``voice-agent --help`` stays fast and works even when the app cannot be imported.
Every sub-command sets ``func``: it takes the parsed arguments and returns the exit code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    _register_extensions(sub)
    return parser


def _register_extensions(sub: SubParsers) -> None:
    """Sub-commands owned by other packages: each adds its parsers with ``register(sub)``."""
    from kpi.cli import register as register_kpi
    from streamnode.cli import register as register_call

    register_call(sub)
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
    from server import local_stack
    from server.providers import choose

    local_stack.register()
    try:  # a broken agent file stops here with its line number, not in a traceback
        local_stack.load_agent(settings, choose(settings))
    except AgentFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    options: dict[str, Any] = {
        "host": args.host or settings.server.host,
        "port": settings.server.port if args.port is None else args.port,
        "log_level": settings.server.log_level.lower(),
        "ws": "websockets-sansio",
        # Refuse an oversized WebSocket message (1009) after reading only its frame header,
        # before the server buffers it; uvicorn's own default is 16 MiB.
        "ws_max_size": settings.stream.max_frame_bytes,
        "access_log": args.access_log,
        # X-Forwarded-For is believed from TRUSTED_PROXIES only (uvicorn would trust
        # 127.0.0.1 by default), so uvicorn's client address and our IP check agree.
        "forwarded_allow_ips": ",".join(settings.stream.trusted_proxies),
    }
    # SIGTERM drains the calls first (server.lifecycle hooks uvicorn's signal handler).
    uvicorn.run("server:app", reload=args.reload, **options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
