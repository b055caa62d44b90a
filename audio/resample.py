"""Streaming int16 mono resampling with soxr.

Quality "MQ": libsoxr's 16-bit-precision recipe. Our output is int16, so HQ's 20-bit
precision is below the quantisation noise anyway; measured on telephony rates MQ has the
same buffering delay as HQ and ~5-10% less CPU, which adds up over hundreds of calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt
import soxr

__all__ = ["QUALITY", "StreamResampler", "nearest_supported_rate", "resample"]

QUALITY: Final = "MQ"


class StreamResampler:
    """Resamples a 16-bit LE mono stream piece by piece, keeping filter state between pieces.

    Pass ``last=True`` with the final piece of an utterance to drain the filter; the
    resampler is then ready for a new stream.
    """

    __slots__ = ("_carry", "_stream", "in_rate", "out_rate")

    def __init__(self, in_rate: int, out_rate: int, *, quality: str = QUALITY) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._carry = b""  # an odd trailing byte waiting for its partner
        self._stream = (
            None
            if in_rate == out_rate
            else soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)
        )

    def process(self, pcm: bytes, last: bool = False) -> bytes:
        if self._carry:
            pcm = self._carry + pcm
            self._carry = b""
        if len(pcm) & 1:
            if last:
                pcm = pcm[:-1]  # half a sample at the end of a stream cannot be played
            else:
                self._carry = pcm[-1:]
                pcm = pcm[:-1]
        stream = self._stream
        if stream is None:
            return pcm
        # Zero-copy view of the bytes (native int16 = little-endian on our targets).
        out: npt.NDArray[np.int16] = stream.resample_chunk(
            np.frombuffer(pcm, dtype=np.int16), last=last
        )
        if last:
            stream.clear()
        return out.tobytes()

    def reset(self) -> None:
        """Drop buffered input and filter state (e.g. after barge-in)."""
        self._carry = b""
        if self._stream is not None:
            self._stream.clear()


def resample(pcm: bytes, in_rate: int, out_rate: int, *, quality: str = QUALITY) -> bytes:
    """One-shot resample of 16-bit LE mono PCM (an odd trailing byte is dropped)."""
    if in_rate <= 0 or out_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
    if len(pcm) & 1:
        pcm = pcm[:-1]
    if in_rate == out_rate or not pcm:
        return pcm
    out: npt.NDArray[np.int16] = soxr.resample(
        np.frombuffer(pcm, dtype=np.int16), in_rate, out_rate, quality=quality
    )
    return out.astype(np.int16, copy=False).tobytes()


def nearest_supported_rate(rate: int, supported: Sequence[int]) -> int:
    """Smallest supported rate >= ``rate`` (so we only ever downsample), else the largest."""
    if not supported:
        raise ValueError("no supported sample rates given")
    above = [r for r in supported if r >= rate]
    return min(above) if above else max(supported)
