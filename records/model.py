"""A call record as plain data: what is stored, served by the API and exported."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

END_REASONS = ("caller_hangup", "transfer", "agent_disconnect", "timeout", "error")


@dataclass(slots=True)
class CallRecord:
    """One call, as the records store keeps it. Times are seconds since the epoch."""

    call_id: str
    started_at: float
    server: str = ""  # which process served it (host:pid)
    virtual_number: str = ""  # masked per RECORDS_MASK_NUMBERS
    customer_number: str = ""
    call_type: str = ""
    sample_rate: int = 0
    language: str = ""
    providers: dict[str, str] = field(default_factory=dict)  # stage -> provider name
    ended_at: float | None = None  # None while the call runs
    duration_s: float | None = None
    end_reason: str | None = None  # one of END_REASONS once ended
    end_detail: str = ""
    transferred_to: str | None = None
    greeting_ms: float | None = None  # call start -> first greeting audio out
    turn_count: int = 0
    barge_in_count: int = 0
    # [{turn, caller_text, agent_text, heard_text, outcome, barge_in, timings{...}}]
    turns: list[dict[str, Any]] = field(default_factory=list)
    agent_lines: list[dict[str, Any]] = field(default_factory=list)  # greeting, goodbye...
    barge_ins: list[dict[str, Any]] = field(default_factory=list)
    provider_errors: list[dict[str, Any]] = field(default_factory=list)
    recording_url: str | None = None  # from the konnect CDR / HANGUP event
    cdr: list[dict[str, Any]] = field(default_factory=list)  # the matched konnect events

    @property
    def active(self) -> bool:
        return self.end_reason is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with ISO 8601 times next to the epoch seconds."""
        data = asdict(self)
        data["started"] = iso(self.started_at)
        data["ended"] = iso(self.ended_at) if self.ended_at is not None else None
        return data

    def summary(self) -> dict[str, Any]:
        """The list view: everything but the per-turn detail."""
        data = self.to_dict()
        for key in ("turns", "agent_lines", "barge_ins", "provider_errors", "cdr"):
            data.pop(key)
        data["provider_error_count"] = len(self.provider_errors)
        return data

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")


def mask_number(number: str) -> str:
    """Every digit but the last four hidden: ``+919876543210`` -> ``+91******3210``.

    A leading ``+`` and country code of two digits stay, so calls can still be told apart
    by country. Masking a masked number changes nothing.
    """
    text = number.strip()
    places = [i for i, ch in enumerate(text) if ch.isdigit() or ch == "*"]
    if len(places) <= 4:
        return text
    keep_head = 2 if text.startswith("+") and len(places) > 8 else 0
    hidden = set(places[keep_head:-4])
    return "".join("*" if i in hidden else ch for i, ch in enumerate(text))


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 604_800.0}


def parse_when(text: str, now: float) -> float:
    """Epoch seconds from ``2026-12-01``, ``2026-12-01T09:30:00+05:30`` (UTC when no zone),
    epoch seconds, or an age such as ``7d``, ``24h``, ``30m``. ValueError otherwise."""
    value = text.strip()
    if not value:
        raise ValueError("empty time")
    unit = _UNITS.get(value[-1].lower())
    if unit is not None and value[:-1].replace(".", "", 1).isdigit():
        return now - float(value[:-1]) * unit
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"not a time: {text!r} (use 2026-12-01, 2026-12-01T09:30:00+05:30, "
            "epoch seconds, or an age like 7d / 24h)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
