"""Summarise a py-spy ``--format raw`` profile (collapsed stacks): top self and inclusive.

python -m bench.profile bench/results/logs/<run>/profile.txt [--top 25] [--grep deepgram]
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

_REPO = str(Path(__file__).resolve().parent.parent) + "/"
_FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _short(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m["file"]
    for marker in ("site-packages/", "/lib/python3.11/", _REPO, "/tmp/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{m['func']} ({path})"


def summarise(text: str) -> tuple[int, Counter[str], Counter[str]]:
    total = 0
    self_: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    for line in text.splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = [_short(f) for f in stack.split(";") if f.strip()]
        if not frames:
            continue
        total += count
        self_[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
    return total, self_, incl


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile")
    p.add_argument("path", type=Path)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--grep", default="", help="only functions whose name/file contains this")
    args = p.parse_args(argv)
    total, self_, incl = summarise(args.path.read_text())
    if not total:
        print("no samples")
        return 1
    print(f"{total} samples")
    for title, counter in (("self", self_), ("inclusive", incl)):
        print(f"\n--- top {title} ---")
        rows = [(k, v) for k, v in counter.most_common() if args.grep in k][: args.top]
        for name, count in rows:
            print(f"{100 * count / total:6.1f}%  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
