"""Call records out as JSON Lines (one whole record a line) or CSV (one row a call).

CSV keeps every field: scalars as they are, nested parts (turns, errors, CDR) as JSON text
in their cell, so a spreadsheet opens it and nothing is lost.
"""

from __future__ import annotations

import csv
import json
from typing import Literal, TextIO

from records.model import CallRecord
from records.store import RecordStore

Format = Literal["jsonl", "csv"]
_NESTED = {"providers", "turns", "agent_lines", "barge_ins", "provider_errors", "cdr"}


def csv_columns() -> list[str]:
    names = CallRecord.field_names()
    at = names.index("started_at") + 1
    return [*names[:at], "started", "ended", *names[at:]]


async def export(
    store: RecordStore, out: TextIO, *, since: float | None, until: float | None, fmt: Format
) -> int:
    """Write every call that started in [since, until), oldest first; how many."""
    count = 0
    writer: csv.DictWriter[str] | None = None
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=csv_columns(), lineterminator="\n")
        writer.writeheader()
    async for record in store.iter_since(since, until):
        data = record.to_dict()
        if writer is None:
            out.write(json.dumps(data, ensure_ascii=False) + "\n")
        else:
            writer.writerow(
                {
                    k: json.dumps(v, ensure_ascii=False) if k in _NESTED else v
                    for k, v in data.items()
                }
            )
        count += 1
    return count
