"""``python -m bench {load,smoke,soak,report}``; see bench/__init__.py."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from .run import RunConfig, run_once


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench")
    sub = p.add_subparsers(dest="command", required=True)
    load = sub.add_parser("load", help="one run per concurrency level")
    load.add_argument("--calls", default="1,10,50,100,200")
    load.add_argument("--duration", type=float, default=60.0, help="seconds per call")
    load.add_argument("--ramp", type=float, default=0.0, help="0 = calls/20 s, at least 2 s")
    load.add_argument("--profile", type=float, default=0.0, help="py-spy seconds per run")
    smoke = sub.add_parser("smoke", help="2 calls, ~20 s: proves the harness works")
    soak = sub.add_parser("soak", help="back-to-back calls for a long time; RSS each minute")
    soak.add_argument("--minutes", type=float, default=30.0)
    soak.add_argument("--calls", type=int, default=50)
    for sp in (load, smoke, soak):
        sp.add_argument("--asyncio", action="store_true", help="uvicorn --loop asyncio")
        sp.add_argument("--log-level", default="INFO")
        sp.add_argument("--label", default="")
        sp.add_argument("--server-root", default="", help="serve from another source tree")
        sp.add_argument("--nice", type=int, default=0, help="niceness of the three processes")
        sp.add_argument("--workers", type=int, default=1, help="voice-agent serve --workers N")
        sp.add_argument(
            "--env",
            action="append",
            default=[],
            metavar="K=V",
            help="a server setting, e.g. CARTESIA_TRANSPORT=sse (repeatable)",
        )
    abuse = sub.add_parser("abuse", help="honest calls during an abuse run (docs/reliability.md)")
    abuse.add_argument("--idle", type=int, default=500, help="idle sockets")
    abuse.add_argument("--bad-per-s", type=float, default=200.0, help="bad-token handshakes/s")
    abuse.add_argument("--post-mib", type=int, default=100, help="size of the huge POST")
    abuse.add_argument("--fast", type=int, default=20, help="callers streaming too fast")
    sub.add_parser("report", help="rewrite docs/PERFORMANCE.md tables and the plot")
    sub.add_parser("rejoin", help="recompute every result's figures from its saved logs")
    return p


def _env_pairs(items: list[str]) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--env wants K=V, got {item!r}")
        pairs.append((key.strip(), value.strip()))
    return tuple(pairs)


def _brief(result: dict[str, object]) -> str:
    return json.dumps(
        {k: result[k] for k in ("name", "calls", "greeting_cold_ms", "figures_ms")}, indent=1
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "report":
        from .report import write_report

        write_report()
        return 0
    if args.command == "abuse":
        from .abuse import AbuseConfig, markdown, run_abuse

        result = run_abuse(
            AbuseConfig(
                idle=args.idle, bad_per_s=args.bad_per_s, post_mib=args.post_mib, fast=args.fast
            )
        )
        print(markdown(result))
        print(f"(bench/results/{result['name']}.json)")
        return 0
    if args.command == "rejoin":
        from .run import RESULTS, rejoin

        for path in sorted(RESULTS.glob("*.json")):
            print(path.name, "rejoined" if rejoin(path) else "no logs")
        return 0
    fast = not args.asyncio
    extra = {"workers": args.workers, "server_env": _env_pairs(args.env)}
    if args.command == "smoke":
        cfgs = [
            RunConfig(
                calls=2,
                seconds=18,
                ramp=1,
                fast_loop=fast,
                label=args.label or "smoke",
                log_level=args.log_level,
                barge_every=2,
                server_root=args.server_root,
                nice=args.nice,
                **extra,
            )
        ]
    elif args.command == "soak":
        cfgs = [
            RunConfig(
                calls=args.calls,
                seconds=args.minutes * 60,
                ramp=10,
                call_seconds=60,
                fast_loop=fast,
                label=args.label or "soak",
                log_level=args.log_level,
                server_root=args.server_root,
                nice=args.nice,
                **extra,
            )
        ]
    else:
        cfgs = [
            RunConfig(
                calls=n,
                seconds=args.duration,
                ramp=args.ramp or max(2.0, n / 20),
                fast_loop=fast,
                log_level=args.log_level,
                label=args.label or "load",
                profile_s=args.profile,
                server_root=args.server_root,
                nice=args.nice,
                **extra,
            )
            for n in (int(x) for x in args.calls.split(","))
        ]
    for cfg in cfgs:
        print(_brief(run_once(cfg)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
