"""The two client processes of the abuse run: ``python -m bench.abuse_roles ROLE CONFIG OUT``.

``honest`` places one batch of honest calls (from 127.0.0.1): the parent runs it once
alone (the baseline) and once while the attack is under way; ``attackers`` runs every
attacker at once. Separate processes, so the attackers' own CPU does not delay the honest
callers' clocks.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .attacks import (
    bad_tokens,
    big_post,
    fast_callers,
    honest_call,
    idle_sockets,
    sources,
)

MIB = 1024 * 1024


async def honest(cfg: dict[str, Any]) -> dict[str, Any]:
    """``honest_calls`` calls, ``honest_spacing_s`` apart, named ``<name>-<n>``."""
    url, spacing, name = cfg["url"], float(cfg["honest_spacing_s"]), cfg["name"]

    async def one(n: int) -> dict[str, Any]:
        await asyncio.sleep(n * spacing)
        result = await honest_call(url, f"{name}-{n}", timeout_s=30.0)
        return {**asdict(result), "served": result.served}

    calls = await asyncio.gather(*(one(n) for n in range(int(cfg["honest_calls"]))))
    return {"calls": list(calls)}


async def attackers(cfg: dict[str, Any]) -> dict[str, Any]:
    url, http_url = cfg["url"], cfg["http_url"]
    good = f"{url}/{cfg['token']}"
    size = int(cfg["post_mib"]) * MIB
    post_from = sources(200, 1)[0]
    idle, refused, posts, fast = await asyncio.gather(
        idle_sockets(
            good, int(cfg["idle"]), sources(1, int(cfg["idle_addresses"])), cfg["idle_seconds"]
        ),
        bad_tokens(url, cfg["bad_per_s"], cfg["bad_seconds"], sources(100, cfg["bad_addresses"])),
        asyncio.gather(
            big_post(http_url, size, post_from),
            big_post(http_url, size, post_from, token=cfg["admin"]),
            big_post(http_url, size, post_from, token=cfg["admin"], chunked=True),
        ),
        fast_callers(
            f"{good}?sample_rate=8000",
            int(cfg["fast"]),
            cfg["fast_speedup"],
            cfg["fast_seconds"],
            sources(150, int(cfg["fast_addresses"])),
        ),
    )
    return {
        "idle": idle.to_json(),
        "bad_tokens": dict(refused),
        "posts": [asdict(p) for p in posts],
        "fast": fast.to_json(),
    }


def main(argv: list[str]) -> int:
    role, config, out = argv
    cfg = json.loads(Path(config).read_text())
    if role == "attackers":
        # Real attackers bring their own machines: on this box they must not take the CPU
        # the server and the honest callers need (their own CPU is reported).
        os.nice(10)
    started, cpu = time.monotonic(), time.process_time()
    result = asyncio.run(honest(cfg) if role == "honest" else attackers(cfg))
    wall = time.monotonic() - started
    result["process_cpu_percent"] = round(100 * (time.process_time() - cpu) / wall, 1)
    Path(out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
