"""The ``voice-agent`` command: ``serve`` here; ``call`` (:mod:`streamnode.cli`) and ``kpi``
(:mod:`kpi.cli`) register themselves.

Heavy modules (uvicorn, the app, numpy) are imported inside the sub-commands so that
``voice-agent --help`` stays fast and works even when the app cannot be imported.
Every sub-command sets ``func``: it takes the parsed arguments and returns the exit code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, MutableMapping, Sequence
from pathlib import Path
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
    from records.cli import register as register_records
    from streamnode.cli import register as register_call

    register_call(sub)
    register_kpi(sub)
    register_records(sub)


# --- serve -------------------------------------------------------------------------


def _add_serve(sub: SubParsers) -> None:
    p = sub.add_parser("serve", help="run the WebSocket server (uvicorn server:app)")
    p.add_argument(
        "--host",
        help="bind address (default: HOST, else 127.0.0.1); a public one needs VOICE_WS_TOKEN",
    )
    p.add_argument("--port", type=int, help="port (default: PORT, else 8000)")
    p.add_argument("--reload", action="store_true", help="restart on code changes (dev)")
    p.add_argument(
        "--workers",
        type=int,
        help="server processes on the one port (default: WORKERS, else the CPU cores this "
        "process may use); each takes its share of MAX_CALLS",
    )
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
    from server.exposure import stream_auth_problem

    try:
        settings = get_settings()
    except ValidationError as exc:
        print(f"error: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    host = args.host or settings.server.host
    problem = stream_auth_problem(host, settings.stream)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
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
        "host": host,
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
    workers = 1 if args.reload else (args.workers or settings.server.worker_count())
    if workers < 1:
        print(f"error: --workers must be at least 1, got {workers}", file=sys.stderr)
        return 2
    if workers > 1:
        from config.logs import setup_logging
        from server.workers import serve_workers

        setup_logging(settings.server.log_level, settings.secrets())
        _share_metrics(workers)  # inherited by the workers: /metrics sums them all
        limit, drain_s = settings.stream.max_calls, settings.server.drain_seconds
        return serve_workers(workers, options, max_calls=limit, drain_s=drain_s)
    # SIGTERM drains the calls first (server.lifecycle hooks uvicorn's signal handler).
    uvicorn.run("server:app", reload=args.reload, **options)
    return 0


def _share_metrics(workers: int, environ: MutableMapping[str, str] | None = None) -> None:
    """Several workers on one port: each writes its metrics to PROMETHEUS_MULTIPROC_DIR and
    any of them answers /metrics with the sum. Set before a worker imports prometheus-client;
    last run's files are removed, as the master starts before any worker."""
    if workers <= 1:
        return
    import os
    import tempfile

    env = os.environ if environ is None else environ
    directory = env.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        directory = env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="voice-metrics-")
    for stale in Path(directory).glob("*.db"):
        stale.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
