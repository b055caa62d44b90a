"""Knowlarity frame protocol: metadata parsing, event builders, alignment, log trimming."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire.knowlarity import (
    MAX_METADATA_BYTES,
    CallMetadata,
    Disconnect,
    FrameAligner,
    KillAudio,
    MetadataError,
    PlayAudio,
    ProtocolError,
    Transfer,
    UnknownEvent,
    describe_frame,
    disconnect,
    generated_metadata,
    kill_audio,
    parse_metadata,
    parse_outgoing,
    play_audio,
    play_audio_wav,
    transfer,
)

SEED_DICT = """{
'callid': '6ccf0a28-XXXX-XXXX-XXXXX-XXXXXXXXXXX',
'virtual_number': '+91XXXXXXXXXX',
'customer_number': '+91YYYYYYYYYY',
'call_type': 'inbound'
}"""
SEED_META = CallMetadata(
    call_id="6ccf0a28-XXXX-XXXX-XXXXX-XXXXXXXXXXX",
    virtual_number="+91XXXXXXXXXX",
    customer_number="+91YYYYYYYYYY",
    call_type="inbound",
)
BOM = b"\xef\xbb\xbf"


# --- metadata: accepted forms ---------------------------------------------------------

GOOD_METADATA: list[tuple[str, str | bytes, CallMetadata]] = [
    ("seed json-wrapped python dict", json.dumps(SEED_DICT), SEED_META),
    ("seed form as bytes", json.dumps(SEED_DICT).encode(), SEED_META),
    ("bare multi-line python dict", SEED_DICT, SEED_META),
    ("bare dict as bytes", SEED_DICT.encode(), SEED_META),
    (
        "json object",
        json.dumps(
            {
                "callid": "6ccf0a28-XXXX-XXXX-XXXXX-XXXXXXXXXXX",
                "virtual_number": "+91XXXXXXXXXX",
                "customer_number": "+91YYYYYYYYYY",
                "call_type": "inbound",
            }
        ),
        SEED_META,
    ),
    ("utf-8 BOM bytes", BOM + json.dumps(SEED_DICT).encode(), SEED_META),
    ("BOM char", "\ufeff" + SEED_DICT, SEED_META),
    ("whitespace around", "\n\t  " + json.dumps(SEED_DICT) + "  \r\n", SEED_META),
    ("BOM inside JSON string", json.dumps("\ufeff " + SEED_DICT), SEED_META),
    ("double-wrapped", json.dumps(json.dumps(SEED_DICT)), SEED_META),
    ("alias call_id", '{"call_id": "c1"}', CallMetadata("c1")),
    ("alias callId", '{"callId": "c2"}', CallMetadata("c2")),
    ("alias uuid", "{'uuid': 'c3'}", CallMetadata("c3")),
    ("int call id coerced", '{"callid": 12345}', CallMetadata("12345")),
    (
        "values stripped",
        "{'callid': ' c4 ', 'call_type': ' inbound '}",
        CallMetadata("c4", call_type="inbound"),
    ),
    (
        "int number coerced",
        "{'callid': 'c5', 'customer_number': 919876543210}",
        CallMetadata("c5", customer_number="919876543210"),
    ),
    ("None field -> empty", '{"callid": "c6", "virtual_number": null}', CallMetadata("c6")),
    (
        "python None/True",
        "{'callid': 'c7', 'virtual_number': None, 'vip': True}",
        CallMetadata("c7", extra={"vip": True}),
    ),
    (
        "extra keys kept",
        '{"callid": "c8", "k": [1, 2], "n": {"a": 1}}',
        CallMetadata("c8", extra={"k": [1, 2], "n": {"a": 1}}),
    ),
    (
        "empty alias falls through",
        '{"callid": "", "uuid": "c9"}',
        CallMetadata("c9", extra={"callid": ""}),
    ),
    (
        "unicode value",
        '{"callid": "c10", "call_type": "इनबाउंड"}',
        CallMetadata("c10", call_type="इनबाउंड"),
    ),
    ("trailing comma python", "{'callid': 'c11',}", CallMetadata("c11")),
    (
        "non-str key kept as str",
        "{'callid': 'c12', 1: 'one'}",
        CallMetadata("c12", extra={"1": "one"}),
    ),
]


@pytest.mark.parametrize(
    ("raw", "expected"), [c[1:] for c in GOOD_METADATA], ids=[c[0] for c in GOOD_METADATA]
)
def test_parse_metadata_accepts(raw: str | bytes, expected: CallMetadata) -> None:
    meta = parse_metadata(raw)
    assert meta == expected
    assert dict(meta.extra) == dict(expected.extra)


# --- metadata: rejected forms ---------------------------------------------------------

BAD_METADATA: list[tuple[str, str | bytes, str]] = [
    ("empty", "", "empty"),
    ("whitespace", "  \n ", "empty"),
    ("BOM only", BOM, "empty"),
    ("empty JSON string", '""', "empty"),
    ("list", "[1, 2]", "not a dict (got list)"),
    ("number", "42", "not a dict (got int)"),
    ("null", "null", "not a dict (got NoneType)"),
    ("json string of list", json.dumps("['a']"), "not a dict (got list)"),
    ("triple-wrapped", json.dumps(json.dumps(json.dumps(SEED_DICT))), "not a dict (got str)"),
    ("garbage", "callid=abc", "invalid literal"),
    ("unterminated", "{'callid': 'abc'", "invalid literal"),
    ("code is not evaluated", "__import__('os').system('true')", "invalid literal"),
    ("call in dict", "{'callid': open('/etc/passwd').read()}", "invalid literal"),
    ("unhashable key", "{['a']: 1}", "invalid literal"),
    ("set of dicts", "{{}}", "invalid literal"),
    ("missing callid", "{'virtual_number': '+91'}", "missing callid"),
    ("empty callid", '{"callid": ""}', "missing callid"),
    ("blank callid", '{"callid": "   "}', "missing callid"),
    ("None callid", "{'callid': None}", "missing callid"),
    ("bad utf-8", b"{'callid': '\xff'}", "not valid UTF-8"),
    ("too large str", "{'callid': '" + "x" * MAX_METADATA_BYTES + "'}", "too large"),
    ("too large bytes", b" " * (MAX_METADATA_BYTES + 1), "too large"),
    (
        "too large in utf-8 only",
        "{'callid': '" + "é" * (MAX_METADATA_BYTES // 2) + "'}",
        "too large",
    ),
    ("deep list", "[" * 100 + "]" * 100, "nested too deeply"),
    ("deep dict", "{'a':" * 40 + "1" + "}" * 40, "nested too deeply"),
    ("deep parens", "(" * 5000, "nested too deeply"),
    ("deep in json string", json.dumps("[" * 50 + "]" * 50), "nested too deeply"),
    ("huge int literal", "{'callid': " + "9" * 5000 + "}", "invalid literal"),
]


@pytest.mark.parametrize(
    ("raw", "message"), [c[1:] for c in BAD_METADATA], ids=[c[0] for c in BAD_METADATA]
)
def test_parse_metadata_rejects(raw: str | bytes, message: str) -> None:
    with pytest.raises(MetadataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_metadata(raw)


def test_metadata_error_hierarchy() -> None:
    assert issubclass(MetadataError, ProtocolError)
    assert issubclass(UnknownEvent, ProtocolError)
    assert issubclass(ProtocolError, ValueError)


def test_max_bytes_is_configurable() -> None:
    raw = '{"callid": "abc"}'
    assert parse_metadata(raw, max_bytes=len(raw)).call_id == "abc"
    with pytest.raises(MetadataError, match=rf"too large \({len(raw)} bytes > {len(raw) - 1}\)"):
        parse_metadata(raw, max_bytes=len(raw) - 1)


def test_moderate_nesting_in_extra_is_fine() -> None:
    meta = parse_metadata("{'callid': 'a', 'x': [[[[1]]]], 'y': {'z': (1, 2)}}")
    assert meta.extra == {"x": [[[[1]]]], "y": {"z": (1, 2)}}


def test_brackets_inside_strings_within_cap() -> None:
    meta = parse_metadata("{'callid': 'a', 'note': '(((x)))'}")
    assert meta.extra == {"note": "(((x)))"}


def test_metadata_extra_is_read_only() -> None:
    meta = parse_metadata('{"callid": "a", "k": 1}')
    with pytest.raises(TypeError):
        meta.extra["k"] = 2  # type: ignore[index]


def test_metadata_is_hashable_and_frozen() -> None:
    meta = parse_metadata('{"callid": "a", "k": [1]}')
    assert isinstance(hash(meta), int)
    with pytest.raises(AttributeError):
        meta.call_id = "b"  # type: ignore[misc]


@given(st.text(max_size=300))
def test_parse_metadata_never_raises_anything_else(raw: str) -> None:
    with contextlib.suppress(MetadataError):
        parse_metadata(raw)


@given(st.binary(max_size=300))
def test_parse_metadata_bytes_never_raises_anything_else(raw: bytes) -> None:
    with contextlib.suppress(MetadataError):
        parse_metadata(raw)


@given(
    st.dictionaries(
        st.sampled_from(["virtual_number", "customer_number", "call_type", "other", "x"]),
        st.text(max_size=20),
    ),
    st.text(min_size=1, max_size=40).filter(lambda s: s.strip() != ""),
)
def test_parse_metadata_round_trips_seed_form(fields: dict[str, str], call_id: str) -> None:
    raw = json.dumps(repr({"callid": call_id, **fields}))
    meta = parse_metadata(raw)
    assert meta.call_id == call_id.strip()
    assert meta.virtual_number == fields.get("virtual_number", "").strip()
    assert dict(meta.extra) == {k: v for k, v in fields.items() if k in ("other", "x")}


# --- generated metadata ---------------------------------------------------------------


def test_generated_metadata() -> None:
    a, b = generated_metadata(), generated_metadata()
    assert a.call_id != b.call_id
    for meta in (a, b):
        assert meta.call_id.startswith("gen-")
        assert len(meta.call_id) == len("gen-") + 12
        int(meta.call_id[4:], 16)
    assert dict(a.extra) == {}


def test_generated_metadata_copies_extra() -> None:
    extra: dict[str, object] = {"reason": "timeout"}
    meta = generated_metadata(extra)
    extra["reason"] = "changed"
    assert meta.extra == {"reason": "timeout"}


# --- outgoing events ------------------------------------------------------------------

WAV = b"RIFF\x00\x01\x02\xff" * 10


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (
            play_audio("QUJD"),
            '{"type":"playAudio","data":{"audioContentType":"wav","audioContent":"QUJD"}}',
        ),
        (kill_audio(), '{"type":"killAudio"}'),
        (disconnect(), '{"type":"disconnect"}'),
        (
            transfer("+911234567890"),
            '{"type":"transfer","data":{"destination":"+911234567890"}}',
        ),
        (transfer('a"b\\c'), r'{"type":"transfer","data":{"destination":"a\"b\\c"}}'),
        (
            transfer("सहायता"),
            '{"type":"transfer","data":{"destination":"\\u0938\\u0939\\u093e\\u092f\\u0924\\u093e"}}',
        ),
    ],
)
def test_event_builders_exact_text(frame: str, expected: str) -> None:
    assert frame == expected
    json.loads(frame)


def test_builders_match_json_dumps_of_seed_objects() -> None:
    compact = (",", ":")
    b64 = base64.b64encode(WAV).decode()
    assert play_audio_wav(WAV) == json.dumps(
        {"type": "playAudio", "data": {"audioContentType": "wav", "audioContent": b64}},
        separators=compact,
    )
    assert play_audio(b64) == play_audio_wav(WAV)
    assert play_audio_wav(bytearray(WAV)) == play_audio_wav(memoryview(WAV)) == play_audio_wav(WAV)
    assert transfer("+91") == json.dumps(
        {"type": "transfer", "data": {"destination": "+91"}}, separators=compact
    )


def test_transfer_rejects_empty_destination() -> None:
    with pytest.raises(ValueError, match="empty"):
        transfer(" ")


@pytest.mark.parametrize(
    ("frame", "event"),
    [
        (play_audio_wav(WAV), PlayAudio(WAV)),
        (play_audio_wav(b""), PlayAudio(b"")),
        (kill_audio(), KillAudio()),
        (disconnect(), Disconnect()),
        (transfer("+91 98"), Transfer("+91 98")),
        ('{ "type": "killAudio" }', KillAudio()),  # the seed's spaced form
        ('{"data": {"destination": "x"}, "type": "transfer"}', Transfer("x")),
    ],
)
def test_parse_outgoing(frame: str, event: object) -> None:
    assert parse_outgoing(frame) == event


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ("", "not JSON"),
        ("playAudio", "not JSON"),
        ("[1]", "not an object"),
        ('{"type": "hangup"}', "unknown event type 'hangup'"),
        ("{}", "unknown event type None"),
        ('{"type": "transfer"}', "transfer without a destination"),
        ('{"type": "transfer", "data": {"destination": ""}}', "transfer without a destination"),
        ('{"type": "playAudio"}', "playAudio without data"),
        (
            '{"type": "playAudio", "data": {"audioContentType": "mp3", "audioContent": ""}}',
            "content type 'mp3'",
        ),
        ('{"type": "playAudio", "data": {"audioContentType": "wav"}}', "without audioContent"),
        (
            '{"type": "playAudio", "data": {"audioContentType": "wav", "audioContent": "ab$c"}}',
            "not base64",
        ),
        (play_audio("QUJ"), "not base64"),
    ],
)
def test_parse_outgoing_rejects(frame: str, message: str) -> None:
    with pytest.raises(UnknownEvent, match=message.replace("(", r"\(")):
        parse_outgoing(frame)


def test_play_audio_repr_hides_payload() -> None:
    assert repr(PlayAudio(b"\x00" * 5000)) == "PlayAudio(wav=<5000 bytes>)"


# --- frame alignment ------------------------------------------------------------------

ALIGN_CASES: list[tuple[str, list[bytes], list[bytes], int]] = [
    ("even frames", [b"ab", b"cdef"], [b"ab", b"cdef"], 0),
    ("empty", [b""], [b""], 0),
    ("odd then odd", [b"abc", b"d"], [b"ab", b"cd"], 0),
    ("odd then even", [b"abc", b"de"], [b"ab", b"cd"], 1),
    ("single bytes", [b"a", b"b", b"c", b"d"], [b"", b"ab", b"", b"cd"], 0),
    ("odd then empty", [b"abc", b""], [b"ab", b""], 1),
    ("long odd chain", [b"a", b"bcd", b"efgh", b"i"], [b"", b"abcd", b"efgh", b""], 1),
    ("carry through even frame", [b"a", b"bc", b"d"], [b"", b"ab", b"cd"], 0),
]


@pytest.mark.parametrize(
    ("frames", "expected", "pending"), [c[1:] for c in ALIGN_CASES], ids=[c[0] for c in ALIGN_CASES]
)
def test_frame_aligner(frames: list[bytes], expected: list[bytes], pending: int) -> None:
    aligner = FrameAligner()
    assert [aligner.push(f) for f in frames] == expected
    assert aligner.pending == pending


def test_frame_aligner_even_frame_is_zero_copy() -> None:
    aligner = FrameAligner()
    frame = bytes(range(64)) * 10
    assert aligner.push(frame) is frame


@given(st.lists(st.binary(max_size=50), max_size=30))
def test_frame_aligner_preserves_bytes(frames: list[bytes]) -> None:
    aligner = FrameAligner()
    outs = [aligner.push(f) for f in frames]
    assert all(len(o) % 2 == 0 for o in outs)
    joined = b"".join(frames)
    assert b"".join(outs) == joined[: len(joined) - aligner.pending]
    assert aligner.pending == len(joined) % 2


# --- log trimming ---------------------------------------------------------------------

B64_4328 = "A" * 4328


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (play_audio(B64_4328), "playAudio(wav, 4328 b64 chars)"),
        (play_audio(""), "playAudio(wav, 0 b64 chars)"),
        (kill_audio(), '{"type":"killAudio"}'),
        (
            json.dumps(
                {
                    "type": "playAudio",
                    "data": {"audioContentType": "wav", "audioContent": "QUJD" * 100},
                }
            ),
            '{"type": "playAudio", "data": {"audioContentType": "wav", '
            '"audioContent": "<400 b64 chars>"}}',
        ),
        ("x" * 130, "x" * 120 + "… (+10 chars)"),
        ("{'a': 1,\n'b': 2}", "{'a': 1,\\n'b': 2}"),
        ('{"audioContent": "unterminated', '{"audioContent": "<12 b64 chars>'),
    ],
)
def test_describe_frame(text: str, expected: str) -> None:
    assert describe_frame(text) == expected


def test_describe_frame_limit() -> None:
    assert describe_frame("abcdef", limit=3) == "abc… (+3 chars)"
    assert (
        len(describe_frame('{"audioContent": "' + "A" * 10_000 + '", "x": "' + "y" * 500 + '"}'))
        < 160
    )


def test_callmetadata_mapping_type() -> None:
    assert isinstance(parse_metadata('{"callid": "a", "b": 1}').extra, Mapping)
