"""WAV header/writer/reader, checked against the stdlib ``wave`` module."""

from __future__ import annotations

import contextlib
import io
import struct
import wave
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audio.wav import WavInfo, parse_wav, pcm_to_wav, read_wav_file, wav_header

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def stdlib_wav(pcm: bytes, rate: int, channels: int = 1, width: int = 2) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


def chunk(chunk_id: bytes, body: bytes) -> bytes:
    return chunk_id + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) & 1 else b"")


def riff(*chunks: bytes) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def fmt_body(tag: int = 1, channels: int = 1, rate: int = 16000, width: int = 2) -> bytes:
    return struct.pack(
        "<HHIIHH", tag, channels, rate, rate * channels * width, channels * width, width * 8
    )


PCM = bytes(range(256)) * 25  # 6400 bytes


@pytest.mark.parametrize(
    ("rate", "n", "channels", "width"),
    [
        (8000, 1600, 1, 2),
        (16000, 3200, 1, 2),
        (24000, 4800, 1, 2),
        (32000, 6400, 1, 2),
        (48000, 9600, 1, 2),
        (16000, 0, 1, 2),
        (44100, 1764, 2, 2),
        (8000, 300, 1, 1),
        (96000, 600, 2, 3),
        (16000, 400, 1, 4),
    ],
)
def test_header_matches_stdlib(rate: int, n: int, channels: int, width: int) -> None:
    pcm = (PCM * 2)[:n]
    assert len(pcm) == n
    assert wav_header(rate, n, channels, width) == stdlib_wav(pcm, rate, channels, width)[:44]


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 24000, 32000, 44100, 48000])
def test_pcm_to_wav_read_by_stdlib(rate: int) -> None:
    wav = pcm_to_wav(PCM, rate)
    assert wav == stdlib_wav(PCM, rate)
    with wave.open(io.BytesIO(wav)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, rate)
        assert w.readframes(w.getnframes()) == PCM


def test_pcm_to_wav_accepts_buffers() -> None:
    expected = pcm_to_wav(PCM, 16000)
    assert pcm_to_wav(bytearray(PCM), 16000) == expected
    assert pcm_to_wav(memoryview(PCM), 16000) == expected


def test_header_is_cached() -> None:
    assert wav_header(16000, 3200) is wav_header(16000, 3200)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 10), "sample_rate"),
        ((16000, 3), "whole number"),
        ((16000, -2), "whole number"),
        ((16000, 2**32), "whole number"),
        ((16000, 10, 0), "channels"),
        ((16000, 10, 1, 5), "sample_width"),
        ((16000, 10, 1, 3), "whole number"),
    ],
)
def test_header_rejects(args: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        wav_header(*args)


def test_pcm_to_wav_rejects_odd_length() -> None:
    with pytest.raises(ValueError, match="whole number"):
        pcm_to_wav(b"\x00\x01\x02", 16000)


@pytest.mark.parametrize(
    ("rate", "channels", "width"), [(16000, 1, 2), (8000, 2, 2), (44100, 1, 1), (48000, 2, 3)]
)
def test_parse_stdlib_output(rate: int, channels: int, width: int) -> None:
    n = len(PCM) // (channels * width) * channels * width
    info = parse_wav(stdlib_wav(PCM[:n], rate, channels, width))
    assert info == WavInfo(channels, width, rate, PCM[:n])
    assert info.frames == n // (channels * width)
    assert info.duration_s == pytest.approx(info.frames / rate)


def test_parse_skips_extra_chunks() -> None:
    wav = riff(
        chunk(b"JUNK", b"\x00" * 27),  # odd size: padded
        chunk(b"fmt ", fmt_body(rate=24000)),
        chunk(b"LIST", b"INFOISFT\x05\x00\x00\x00Lavf\x00\x00"),
        chunk(b"fact", struct.pack("<I", 100)),
        chunk(b"data", PCM[:200]),
        chunk(b"id3 ", b"tag"),
    )
    assert parse_wav(wav) == WavInfo(1, 2, 24000, PCM[:200])


def test_parse_extensible_pcm() -> None:
    guid = bytes.fromhex("0100000000001000800000aa00389b71")
    ext = fmt_body(tag=0xFFFE) + struct.pack("<HHI", 22, 16, 4) + guid
    assert parse_wav(riff(chunk(b"fmt ", ext), chunk(b"data", PCM[:64]))).pcm == PCM[:64]


@pytest.mark.parametrize(
    ("declared", "present", "expected"),
    [
        (0xFFFFFFFF, 100, 100),  # streaming writer: unknown length
        (1000, 101, 100),  # truncated: whole samples only
        (100, 150, 100),  # trailing garbage after the chunk is ignored
    ],
)
def test_parse_data_size_mismatch(declared: int, present: int, expected: int) -> None:
    wav = riff(chunk(b"fmt ", fmt_body())) + b"data" + struct.pack("<I", declared) + PCM[:present]
    assert parse_wav(wav).pcm == PCM[:expected]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a RIFF/WAVE"),
        (b"RIFX" + b"\x00" * 40, "not a RIFF/WAVE"),
        (b"RIFF\x00\x00\x00\x00AVI " + b"\x00" * 32, "not a RIFF/WAVE"),
        (riff(chunk(b"data", PCM[:10])), "data chunk before fmt"),
        (riff(chunk(b"fmt ", fmt_body())), "no data chunk"),
        (riff(), "no fmt chunk"),
        (riff(chunk(b"fmt ", b"\x01\x00")), "fmt chunk too short"),
        (
            riff(chunk(b"fmt ", fmt_body(tag=3, width=4)), chunk(b"data", b"")),
            r"not PCM \(format tag 0x0003\)",
        ),
        (riff(chunk(b"fmt ", fmt_body(tag=6)), chunk(b"data", b"")), "not PCM"),
        (riff(chunk(b"fmt ", fmt_body(tag=0xFFFE)), chunk(b"data", b"")), "non-PCM sub-format"),
        (riff(chunk(b"fmt ", fmt_body(channels=0)), chunk(b"data", b"")), "channels=0"),
        (riff(chunk(b"fmt ", fmt_body(rate=0)), chunk(b"data", b"")), "rate=0"),
        (
            riff(
                chunk(b"fmt ", struct.pack("<HHIIHH", 1, 1, 8000, 8000, 2, 12)), chunk(b"data", b"")
            ),
            "bits per sample: 12",
        ),
        (
            riff(
                chunk(b"fmt ", struct.pack("<HHIIHH", 1, 1, 8000, 8000, 4, 16)), chunk(b"data", b"")
            ),
            "block_align=4",
        ),
    ],
)
def test_parse_rejects(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_wav(data)


@given(
    st.binary(max_size=200).map(lambda b: b[: len(b) & ~1]),
    st.sampled_from([8000, 16000, 22050, 48000]),
)
def test_round_trip(pcm: bytes, rate: int) -> None:
    assert parse_wav(pcm_to_wav(pcm, rate)) == WavInfo(1, 2, rate, pcm)


@given(st.binary(max_size=120))
def test_parse_garbage_raises_only_value_error(data: bytes) -> None:
    for candidate in (data, b"RIFF\x00\x00\x00\x00WAVE" + data):
        with contextlib.suppress(ValueError):
            parse_wav(candidate)


def test_read_wav_file(tmp_path: Path) -> None:
    path = tmp_path / "x.wav"
    path.write_bytes(stdlib_wav(PCM, 8000))
    assert read_wav_file(path) == WavInfo(1, 2, 8000, PCM)
    assert read_wav_file(str(path)).sample_rate == 8000


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.wav")))
def test_fixture_files_agree_with_stdlib(name: str) -> None:
    path = FIXTURES / name
    info = read_wav_file(path)
    with wave.open(str(path)) as w:
        assert (info.channels, info.sample_width, info.sample_rate) == (
            w.getnchannels(),
            w.getsampwidth(),
            w.getframerate(),
        )
        assert info.pcm == w.readframes(w.getnframes())
