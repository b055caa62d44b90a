"""Re-chunk a PCM stream into fixed-size pieces (e.g. 100 ms playAudio chunks)."""

from __future__ import annotations

__all__ = ["PcmChunker", "chunk_bytes"]


def chunk_bytes(sample_rate: int, chunk_ms: int) -> int:
    """Bytes of 16-bit mono PCM in ``chunk_ms`` milliseconds (whole samples, so even)."""
    if sample_rate <= 0 or chunk_ms <= 0:
        raise ValueError(f"need positive sample_rate and chunk_ms, got {sample_rate}, {chunk_ms}")
    samples = sample_rate * chunk_ms // 1000
    if samples == 0:
        raise ValueError(f"{chunk_ms} ms at {sample_rate} Hz is less than one sample")
    return samples * 2


class PcmChunker:
    """Cuts arbitrary PCM pieces into chunks of exactly ``chunk_bytes``.

    Only the tail shorter than one chunk is buffered, so every output byte is copied
    once (and a piece that is exactly one chunk is passed through without a copy).
    """

    __slots__ = ("_buf", "_size", "dropped_bytes")

    def __init__(self, chunk_bytes: int) -> None:
        if chunk_bytes <= 0 or chunk_bytes & 1:
            raise ValueError(f"chunk_bytes must be positive and even, got {chunk_bytes}")
        self._size = chunk_bytes
        self._buf = bytearray()  # always shorter than one chunk
        self.dropped_bytes = 0  # dangling odd bytes discarded by flush()

    @property
    def chunk_bytes(self) -> int:
        return self._size

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def push(self, pcm: bytes | bytearray | memoryview) -> list[bytes]:
        size = self._size
        buf = self._buf
        if not buf and type(pcm) is bytes and len(pcm) == size:
            return [pcm]
        view = memoryview(pcm).cast("B")
        n = len(view)
        start = 0
        out: list[bytes] = []
        if buf:
            need = size - len(buf)
            if n < need:
                buf += view
                return out
            buf += view[:need]
            out.append(bytes(buf))
            buf.clear()
            start = need
        end = start + (n - start) // size * size
        out.extend(view[i : i + size].tobytes() for i in range(start, end, size))
        if end < n:
            buf += view[end:]
        return out

    def flush(self) -> bytes:
        """The buffered remainder in whole samples; resets the chunker."""
        buf = self._buf
        if len(buf) & 1:
            del buf[-1]
            self.dropped_bytes += 1
        out = bytes(buf)
        buf.clear()
        return out
