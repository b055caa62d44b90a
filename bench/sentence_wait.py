"""How long a finished sentence waits in the splitter, on virtual time (deterministic).

    python -m bench.sentence_wait                 # this tree against the splitter of BASELINE_REV
    python -m bench.sentence_wait --baseline-rev HEAD~3 --json

Replies a phone agent gives are cut into LLM-like tokens (the cl100k pre-tokenizer's
shape: a word with its leading space, a punctuation run, ``.com`` glued to its dot) and
fed to the splitter at seeded, jittered token gaps (``--gap-ms`` ± 2/3 of it). For every
sentence the wait is: the time it is handed to TTS − the time of the token that holds its
last character. Nothing here sleeps or reads a clock, so every run prints the same figures.

The baseline splitter is the one at ``--baseline-rev`` (``git show``), loaded as its own
module, so a before/after needs no flag in the production code.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from pipeline import sentences

from .stats import summary

ROOT = Path(__file__).resolve().parent.parent
BASELINE_REV = "b029311"  # the splitter before issue 13 (waits for the next word at ".")

# A letter run may carry one leading non-letter (" hello", ".com", "'s"); numbers in
# threes; a punctuation run with an optional leading space ("?!", '."', "..."); spaces.
_TOKEN = re.compile(r"[^\r\n\w]?[^\W\d_]+|\d{1,3}| ?[^\s\w]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

REPLIES = (
    "You said: hello there. Is there anything else?",
    "Sure! I can help you with that. What is your booking number?",
    "Your appointment is confirmed for tomorrow at 10:30 am. Is there anything else?",
    "I'm sorry, I didn't catch that. Could you repeat it, please?",
    "Dr. Rao is available on Monday. Shall I book that slot for you?",
    "The fee is Rs. 500 per visit. You can pay online or at the clinic.",
    "We are open from 9 a.m. to 6 p.m. on weekdays. On Sundays we are closed.",
    "Your order No. 4521 has shipped. It should reach you in 3 days.",
    "Of course. Let me transfer you to a colleague who can help.",
    "That's great news! Is there anything else I can do for you today?",
    "You can visit www.example.com for details. Or I can send you an SMS.",
    "The total comes to 1,250.75 rupees. Would you like to pay now?",
    "Okay. I have noted your request. Someone will call you back within an hour.",
    "Hmm, let me check. Yes, we have two rooms free on the 14th. Shall I hold one?",
    "Thank you for your patience. Your refund of Rs. 2,000 was processed on 3 June.",
    "Absolutely. The branch near you is on M.G. Road. It opens at 10.",
    "I understand your concern, and I'm sorry for the trouble with your last delivery. "
    "I've raised a complaint, and our team will get back to you by tomorrow evening.",
    "Yes. Your plan includes 2 GB of data per day. Do you want to upgrade?",
    "Please hold on while I check that for you. Thanks for waiting!",
    "Got it. So that's a table for four at 8 p.m. Saturday. Anything else?",
)


class Splitter(Protocol):
    def push(self, delta: str) -> list[str]: ...

    def flush(self) -> str | None: ...


def tokens(text: str) -> list[str]:
    out = _TOKEN.findall(text)
    assert "".join(out) == text, text
    return out


def _end_offsets(text: str, sentences_out: Sequence[str]) -> list[int]:
    """Index in ``text`` of the last character of each sentence (matched without spaces)."""
    offsets: list[int] = []
    pos = 0
    for sentence in sentences_out:
        last = pos
        for ch in sentence.replace(" ", ""):
            while text[pos].isspace():
                pos += 1
            assert text[pos] == ch, (text, sentence)
            last = pos
            pos += 1
        offsets.append(last)
    return offsets


def waits_ms(
    make: Callable[[], Splitter], reply: str, gap_ms: float, rng: random.Random
) -> tuple[list[float], float]:
    """The wait of each sentence of ``reply`` (ms), the first one first, and when the first
    text went to TTS (ms after the first token)."""
    toks = tokens(reply)
    arrivals: list[float] = []
    ends: list[int] = []  # end offset (exclusive) of each token in the reply
    t, pos = 0.0, 0
    for tok in toks:
        arrivals.append(t)
        pos += len(tok)
        ends.append(pos)
        t += rng.uniform(gap_ms / 3, gap_ms * 5 / 3)
    stream_end = t  # the stream's finish arrives one more gap later
    splitter = make()
    emitted: list[tuple[str, float]] = []
    for tok, at in zip(toks, arrivals, strict=True):
        emitted.extend((s, at) for s in splitter.push(tok))
    rest = splitter.flush()
    if rest is not None:
        emitted.append((rest, stream_end))
    out: list[float] = []
    for (_, at), last in zip(emitted, _end_offsets(reply, [s for s, _ in emitted]), strict=True):
        completing = next(i for i, end in enumerate(ends) if end > last)
        out.append(at - arrivals[completing])
    return out, emitted[0][1]


def measure(make: Callable[[], Splitter], gap_ms: float, seed: int = 13) -> dict[str, Any]:
    rng = random.Random(seed)
    first: list[float] = []
    every: list[float] = []
    first_text: list[float] = []
    for reply in REPLIES:
        w, first_at = waits_ms(make, reply, gap_ms, rng)
        first.append(w[0])
        every.extend(w)
        first_text.append(first_at)
    return {
        "first_text_to_tts_ms": summary(first_text),
        "first_sentence_wait_ms": summary(first),
        "every_sentence_wait_ms": summary(every),
        "first_sentences_at_once": sum(1 for w in first if w == 0.0),
        "replies": len(REPLIES),
        "sentences": len(every),
    }


def load_baseline(rev: str) -> ModuleType:
    source = subprocess.run(
        ["git", "show", f"{rev}:pipeline/sentences.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "sentences_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("sentences_baseline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(baseline_rev: str, gaps_ms: Sequence[float], clause_chars: int) -> dict[str, Any]:
    makers: dict[str, Callable[[], Splitter]] = {}
    if baseline_rev:
        old = load_baseline(baseline_rev)
        makers[f"baseline ({baseline_rev})"] = lambda: old.SentenceSplitter()
    makers["certain ends"] = lambda: sentences.SentenceSplitter()
    if clause_chars:
        makers[f"+ first clause ≥ {clause_chars} chars"] = lambda: sentences.SentenceSplitter(
            first_clause_chars=clause_chars
        )
    return {
        f"{gap:g}": {name: measure(make, gap) for name, make in makers.items()} for gap in gaps_ms
    }


def markdown(result: dict[str, Any]) -> str:
    rows = [
        "| token gap | splitter | first sentence wait p50 / p95 / max (ms) "
        "| every sentence p50 / p95 | first sentences sent on their own token "
        "| first text to TTS, from the first token: p50 / p95 (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for gap, by_name in result.items():
        for name, r in by_name.items():
            f, e = r["first_sentence_wait_ms"], r["every_sentence_wait_ms"]
            t = r["first_text_to_tts_ms"]
            rows.append(
                f"| {gap} ms | {name} | {f['p50']:.1f} / {f['p95']:.1f} / {f['max']:.1f} "
                f"| {e['p50']:.1f} / {e['p95']:.1f} "
                f"| {r['first_sentences_at_once']} of {r['replies']} "
                f"| {t['p50']:.1f} / {t['p95']:.1f} |"
            )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sentence_wait")
    parser.add_argument("--baseline-rev", default=BASELINE_REV, help="'' = no baseline")
    parser.add_argument("--gap-ms", default="30", help="mean token gaps, comma-separated")
    parser.add_argument("--first-clause", type=int, default=30, help="0 = leave it out")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    gaps = [float(g) for g in args.gap_ms.split(",")]
    result = run(args.baseline_rev, gaps, args.first_clause)
    print(json.dumps(result, indent=1) if args.json else markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
