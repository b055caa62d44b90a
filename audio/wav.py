"""Canonical 44-byte PCM WAV headers and a tolerant WAV reader."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Final

__all__ = ["WavInfo", "parse_wav", "pcm_to_wav", "read_wav_file", "wav_header"]

_HEADER = struct.Struct("<4sI4s4sIHHIIHH4sI")
_RIFF = struct.Struct("<4sI4s")
_CHUNK = struct.Struct("<4sI")
_FMT = struct.Struct("<HHIIHH")
_MAX_DATA: Final = 0xFFFFFFFF - 36  # RIFF size field is 32-bit and counts 36 header bytes
_FORMAT_PCM: Final = 0x0001
_FORMAT_EXTENSIBLE: Final = 0xFFFE
# KSDATAFORMAT_SUBTYPE_PCM: the extensible format's sub-format GUID for integer PCM.
_SUBTYPE_PCM: Final = bytes.fromhex("0100000000001000800000aa00389b71")


@dataclass(frozen=True, slots=True)
class WavInfo:
    channels: int
    sample_width: int  # bytes per sample
    sample_rate: int
    pcm: bytes

    @property
    def frames(self) -> int:
        return len(self.pcm) // (self.channels * self.sample_width)

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


@lru_cache(maxsize=256)  # most playAudio chunks share (rate, length), so this hits
def wav_header(
    sample_rate: int, data_bytes: int, channels: int = 1, sample_width: int = 2
) -> bytes:
    """The 44-byte RIFF/WAVE header for ``data_bytes`` of integer PCM."""
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if channels <= 0:
        raise ValueError(f"channels must be positive, got {channels}")
    if sample_width not in (1, 2, 3, 4):
        raise ValueError(f"sample_width must be 1-4 bytes, got {sample_width}")
    block_align = channels * sample_width
    if not 0 <= data_bytes <= _MAX_DATA or data_bytes % block_align:
        raise ValueError(
            f"data_bytes={data_bytes} is not a whole number of {block_align}-byte frames"
        )
    return _HEADER.pack(
        b"RIFF",
        36 + data_bytes,
        b"WAVE",
        b"fmt ",
        16,
        _FORMAT_PCM,
        channels,
        sample_rate,
        sample_rate * block_align,
        block_align,
        sample_width * 8,
        b"data",
        data_bytes,
    )


def pcm_to_wav(pcm: bytes | bytearray | memoryview, sample_rate: int) -> bytes:
    """16-bit mono PCM wrapped in a WAV container (one copy of the samples)."""
    n = memoryview(pcm).nbytes
    return b"".join((wav_header(sample_rate, n), pcm))


def parse_wav(data: bytes | bytearray | memoryview) -> WavInfo:
    """Read a PCM WAV, skipping chunks such as LIST or fact.

    A data chunk that claims more bytes than present (streaming writers use 0xFFFFFFFF)
    is cut to the bytes present, in whole frames. Raises ValueError otherwise.
    """
    view = memoryview(data).cast("B")
    if len(view) < 12 or _RIFF.unpack_from(view)[::2] != (b"RIFF", b"WAVE"):
        raise ValueError("not a RIFF/WAVE file")
    fmt: tuple[int, int, int] | None = None  # channels, sample_width, sample_rate
    pos = 12
    while pos + _CHUNK.size <= len(view):
        chunk_id, size = _CHUNK.unpack_from(view, pos)
        body = pos + _CHUNK.size
        if chunk_id == b"fmt ":
            fmt = _parse_fmt(view[body : body + size])
        elif chunk_id == b"data":
            if fmt is None:
                raise ValueError("data chunk before fmt chunk")
            channels, width, rate = fmt
            end = min(body + size, len(view))
            end -= (end - body) % (channels * width)
            return WavInfo(channels, width, rate, view[body:end].tobytes())
        pos = body + size + (size & 1)  # chunks are padded to even length
    raise ValueError("no data chunk" if fmt is not None else "no fmt chunk")


def _parse_fmt(body: memoryview) -> tuple[int, int, int]:
    if len(body) < _FMT.size:
        raise ValueError(f"fmt chunk too short ({len(body)} bytes)")
    tag, channels, rate, _byte_rate, block_align, bits = _FMT.unpack_from(body)
    if tag == _FORMAT_EXTENSIBLE:
        if len(body) < 40 or body[24:40] != _SUBTYPE_PCM:
            raise ValueError("WAVE_FORMAT_EXTENSIBLE with a non-PCM sub-format")
    elif tag != _FORMAT_PCM:
        raise ValueError(f"not PCM (format tag 0x{tag:04x})")
    if channels <= 0 or rate <= 0:
        raise ValueError(f"bad fmt: channels={channels} rate={rate}")
    if bits <= 0 or bits > 32 or bits % 8:
        raise ValueError(f"unsupported bits per sample: {bits}")
    width = bits // 8
    if block_align != channels * width:
        raise ValueError(f"bad fmt: block_align={block_align} for {channels}x{bits}-bit")
    return channels, width, rate


def read_wav_file(path: str | os.PathLike[str]) -> WavInfo:
    return parse_wav(Path(path).read_bytes())
