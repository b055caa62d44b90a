"""Percentiles without numpy in the hot path (the lists are small)."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["percentile", "summary"]


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated ``q``-th percentile (0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low, high = math.floor(pos), math.ceil(pos)
    if low == high:
        return ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def summary(values_ms: Sequence[float]) -> dict[str, float | int | None]:
    """``{n, p50, p95, p99, max}`` in the unit given (milliseconds throughout the bench)."""
    return {
        "n": len(values_ms),
        "p50": _round(percentile(values_ms, 50)),
        "p95": _round(percentile(values_ms, 95)),
        "p99": _round(percentile(values_ms, 99)),
        "max": _round(max(values_ms) if values_ms else None),
    }
