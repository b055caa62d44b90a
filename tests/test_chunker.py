"""PCM re-chunking: exact chunk sizes, no audio lost or duplicated at boundaries."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audio.chunker import PcmChunker, chunk_bytes


@pytest.mark.parametrize(
    ("rate", "ms", "expected"),
    [
        (16000, 100, 3200),  # the seed's example
        (16000, 20, 640),  # Knowlarity's inbound frame size
        (8000, 100, 1600),
        (24000, 100, 4800),
        (32000, 100, 6400),
        (48000, 100, 9600),
        (44100, 100, 8820),
        (22050, 100, 4410),
        (22050, 10, 440),  # 220.5 samples -> 220, still even
        (11025, 1, 22),
        (8000, 1, 16),
        (1000, 1, 2),
    ],
)
def test_chunk_bytes(rate: int, ms: int, expected: int) -> None:
    assert chunk_bytes(rate, ms) == expected
    assert expected % 2 == 0


@pytest.mark.parametrize(("rate", "ms"), [(0, 100), (16000, 0), (-8000, 10), (16000, -1), (999, 1)])
def test_chunk_bytes_rejects(rate: int, ms: int) -> None:
    with pytest.raises(ValueError, match=r"sample|positive"):
        chunk_bytes(rate, ms)


@pytest.mark.parametrize("size", [0, -2, 3])
def test_chunker_rejects_bad_size(size: int) -> None:
    with pytest.raises(ValueError, match="positive and even"):
        PcmChunker(size)


DATA = bytes(range(256)) * 4  # 1024 distinct-ish bytes

# (pieces as lengths, chunk size, expected chunk count per push, buffered after, flushed)
CASES: list[tuple[str, list[int], int, list[int], int, int]] = [
    ("exact chunk", [8], 8, [1], 0, 0),
    ("two exact", [8, 8], 8, [1, 1], 0, 0),
    ("less than chunk", [6], 8, [0], 6, 6),
    ("fills across pushes", [6, 2], 8, [0, 1], 0, 0),
    ("overshoot carries", [6, 6], 8, [0, 1], 4, 4),
    ("many in one push", [35], 8, [4], 3, 2),
    ("odd pieces", [3, 3, 3], 8, [0, 0, 1], 1, 0),
    ("single bytes", [1] * 9, 4, [0, 0, 0, 1, 0, 0, 0, 1, 0], 1, 0),
    ("empty push", [0, 8, 0], 8, [0, 1, 0], 0, 0),
    ("buffered then many", [2, 30], 8, [0, 4], 0, 0),
    ("odd remainder flush drops", [13], 4, [3], 1, 0),
    ("big chunk", [1000, 24], 256, [3, 1], 0, 0),
]


@pytest.mark.parametrize(
    ("lengths", "size", "counts", "buffered", "flushed"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_chunker_table(
    lengths: list[int], size: int, counts: list[int], buffered: int, flushed: int
) -> None:
    chunker = PcmChunker(size)
    pos = 0
    outs: list[bytes] = []
    for n, count in zip(lengths, counts, strict=True):
        got = chunker.push(DATA[pos : pos + n])
        pos += n
        assert len(got) == count
        assert all(len(c) == size for c in got)
        outs += got
    assert chunker.buffered == buffered
    rest = chunker.flush()
    assert len(rest) == flushed
    assert chunker.dropped_bytes == buffered - flushed
    assert chunker.buffered == 0
    total = sum(lengths)
    assert b"".join([*outs, rest]) == DATA[: total - (total - sum(map(len, outs))) % 2]


def test_exact_chunk_is_passed_through() -> None:
    chunker = PcmChunker(8)
    piece = bytes(range(8))
    assert chunker.push(piece)[0] is piece


def test_accepts_bytearray_and_memoryview() -> None:
    chunker = PcmChunker(4)
    assert chunker.push(bytearray(b"abcdef")) == [b"abcd"]
    assert chunker.push(memoryview(b"ghij")) == [b"efgh"]
    assert chunker.flush() == b"ij"


def test_outputs_are_independent_of_input_buffer() -> None:
    chunker = PcmChunker(4)
    src = bytearray(b"abcdefgh")
    out = chunker.push(src)
    src[:] = b"zzzzzzzz"
    assert out == [b"abcd", b"efgh"]


def test_flush_resets_and_chunker_is_reusable() -> None:
    chunker = PcmChunker(4)
    assert chunker.push(b"abc") == []
    assert chunker.flush() == b"ab"
    assert chunker.dropped_bytes == 1
    assert chunker.push(b"wxyz") == [b"wxyz"]
    assert chunker.flush() == b""
    assert chunker.chunk_bytes == 4


@given(
    st.sampled_from([2, 4, 6, 640, 3200]),
    st.lists(st.integers(min_value=0, max_value=7000), max_size=25),
)
def test_no_audio_lost_at_boundaries(size: int, lengths: list[int]) -> None:
    data = bytes(i * 7 % 251 for i in range(sum(lengths)))
    chunker = PcmChunker(size)
    outs: list[bytes] = []
    pos = 0
    for n in lengths:
        got = chunker.push(data[pos : pos + n])
        pos += n
        assert all(len(c) == size for c in got)
        outs += got
    rest = chunker.flush()
    assert len(rest) % 2 == 0
    assert len(rest) < size
    assert b"".join([*outs, rest]) == data[: len(data) & ~1]
    assert chunker.dropped_bytes == len(data) & 1
