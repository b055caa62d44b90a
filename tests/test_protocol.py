"""Knowlarity frame protocol: metadata parsing, event builders, alignment, log trimming."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import tracemalloc
from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire.knowlarity import (
    HARD_MAX_METADATA_BYTES,
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
from wire.metadata_literal import LiteralError, parse_literal

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
    ("deep parens", "(" * 4000, "nested too deeply"),
    ("deep in json string", json.dumps("[" * 50 + "]" * 50), "nested too deeply"),
    ("huge int literal", "{'callid': " + "9" * 4000 + "}", "invalid literal"),
    # ast.literal_eval took all of these; metadata is strings, numbers and flags.
    ("complex number", "{'callid': 'a', 'x': 1+2j}", "invalid literal"),
    ("set", "{'callid': 'a', 'x': {1, 2}}", "invalid literal"),
    ("bytes", "{'callid': b'a'}", "invalid literal"),
    ("ellipsis", "{'callid': 'a', 'x': ...}", "invalid literal"),
    ("tuple key", "{('a', 'b'): 1, 'callid': 'a'}", "invalid literal"),
    ("name", "{'callid': callid}", "invalid literal"),
    ("truncated escape", "{'callid': 'a\\x4'}", "invalid literal"),
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


def test_max_bytes_cannot_lift_the_hard_cap() -> None:
    """Finding 6: a 1 MiB MAX_METADATA_BYTES once let one frame block the loop for 1.4 s."""
    raw = "{'callid': 'a', 'pad': '" + "x" * HARD_MAX_METADATA_BYTES + "'}"
    with pytest.raises(MetadataError, match=rf"> {HARD_MAX_METADATA_BYTES}\)"):
        parse_metadata(raw, max_bytes=1_048_576)


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


CALL_IDS = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._:@+=-]{0,40}\Z")


@given(
    st.dictionaries(
        st.sampled_from(["virtual_number", "customer_number", "call_type", "other", "x"]),
        st.text(max_size=20),
    ),
    CALL_IDS,
)
def test_parse_metadata_round_trips_seed_form(fields: dict[str, str], call_id: str) -> None:
    raw = json.dumps(repr({"callid": call_id, **fields}))
    meta = parse_metadata(raw)
    assert meta.call_id == call_id
    number = fields.get("virtual_number", "").strip()
    assert meta.virtual_number == "".join(c if c.isprintable() else "?" for c in number)
    assert dict(meta.extra) == {k: v for k, v in fields.items() if k in ("other", "x")}


@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(10**12), 10**12)
        | st.text(max_size=12)
        | st.floats(allow_nan=False, allow_infinity=False),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.text(max_size=5) | st.integers(0, 99), inner, max_size=3)
        ),
        max_leaves=12,
    )
)
def test_literal_parser_reads_what_repr_writes(value: object) -> None:
    """The restricted parser agrees with Python on the literals repr() produces."""
    assert parse_literal(repr(value)) == value


# --- call ids: finding 5 --------------------------------------------------------------


@pytest.mark.parametrize(
    "call_id",
    [
        "abc\n2026-01-01 [call_id=x] [SESSION] forged",  # a forged log line
        "a b",
        "'quoted'",
        "x" * 129,
        "-leading-dash",
        "emoji-📞",
        "tab\there",
    ],
)
def test_unsafe_call_ids_are_replaced_and_the_fields_kept(call_id: str) -> None:
    meta = parse_metadata(json.dumps({"callid": call_id, "customer_number": "+919876543210"}))
    assert meta.call_id.startswith("gen-")
    assert meta.customer_number == "+919876543210"  # the rest of the frame is still used
    assert "\n" not in meta.refused_call_id and len(meta.refused_call_id) < 80
    assert meta.refused_call_id.startswith("'") or meta.refused_call_id.startswith('"')


def test_safe_call_ids_are_kept() -> None:
    for call_id in ("6ccf0a28-1a2b-4c3d-8e9f-0a1b2c3d4e5f", "sim-0a1b", "x" * 128, "a.b:c@d+e=f"):
        meta = parse_metadata(json.dumps({"callid": call_id}))
        assert (meta.call_id, meta.refused_call_id) == (call_id, "")


def test_logged_fields_are_one_short_printable_line() -> None:
    meta = parse_metadata(
        json.dumps({"callid": "c1", "customer_number": "+91\nFAKE LINE", "call_type": "x" * 500})
    )
    assert meta.customer_number == "+91?FAKE LINE"
    assert meta.call_type == "x" * 64


# --- the literal parser: finding 6 ----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("{'a': 'b' 'c'}", {"a": "bc"}),  # adjacent literals join
        ("{'a': (1)}", {"a": 1}),
        ("{'a': (1,)}", {"a": (1,)}),
        ("{'a': ()}", {"a": ()}),
        ("{'a': -1.5e3, 'b': +2, 'c': 1_000}", {"a": -1500.0, "b": 2, "c": 1000}),
        ("{'a': '\\x41\\u00e9\\N{DEVANAGARI LETTER KA}\\101\\q'}", {"a": "Aéक" + "A\\q"}),
        ('{"a": "it\'s", \'b\': \'say "hi"\'}', {"a": "it's", "b": 'say "hi"'}),
        ("{1: True, 2.5: None, None: False}", {1: True, 2.5: None, None: False}),
    ],
)
def test_literal_parser_accepts(text: str, value: object) -> None:
    assert parse_literal(text) == value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{'a': 1", "expected ',' or '}'"),
        ("{'a' 1}", "expected ':'"),
        ("{'a': 1} x", "after the value"),
        ("'abc", "unterminated string"),
        ("'a\nb'", "unterminated string"),
        ("[" * 17 + "]" * 17, "nested too deeply"),
        ("1" * 40, "number too long"),
        ("{'a': __import__('os')}", "not a literal"),
        ("'\\U00110000'", "out of range"),
        ("'\\N{NO SUCH CHARACTER}'", "unknown character name"),
        ("", "unexpected end"),
    ],
)
def test_literal_parser_refuses(text: str, message: str) -> None:
    with pytest.raises(LiteralError, match=re.escape(message)):
        parse_literal(text)


def test_crafted_metadata_costs_little_memory() -> None:
    """ast built a full tree for crafted frames (~200 MB at 1 MiB); this parser builds
    only the values it returns. Measured with tracemalloc (bytes, not time)."""
    crafted = [
        "{'callid': " + "-" * 4000 + "1}",
        "{'callid': 'a', 'k': [" + "1," * 2000 + "]}",
        "{'callid': 'a', 'k': " + "(" * 16 + ")" * 16 + "}",
        "{'callid': 'a', 'k': '" + "\\x41" * 1000 + "'}",
    ]
    for raw in crafted:
        assert len(raw) <= MAX_METADATA_BYTES
        tracemalloc.start()
        with contextlib.suppress(MetadataError):
            parse_metadata(raw)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < 512 * 1024, (raw[:40], peak)


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

ALIGN_CASES: list[tuple[str, list[bytes], list[bytes], int, int]] = [
    ("even frames", [b"ab", b"cdef"], [b"ab", b"cdef"], 0, 0),
    ("empty", [b""], [b""], 0, 0),
    ("odd then odd: a split sample", [b"abc", b"d"], [b"ab", b"cd"], 0, 0),
    ("odd then even: a stray byte", [b"abc", b"de"], [b"ab", b"de"], 0, 1),
    ("single bytes", [b"a", b"b", b"c", b"d"], [b"", b"ab", b"", b"cd"], 0, 0),
    ("odd then empty keeps the carry", [b"abc", b"", b"d"], [b"ab", b"", b"cd"], 0, 0),
    ("long odd chain", [b"a", b"bcd", b"efgh", b"i"], [b"", b"abcd", b"efgh", b""], 1, 0),
    ("stray before an even frame", [b"a", b"bc", b"d"], [b"", b"bc", b""], 1, 1),
]


@pytest.mark.parametrize(
    ("frames", "expected", "pending", "dropped"),
    [c[1:] for c in ALIGN_CASES],
    ids=[c[0] for c in ALIGN_CASES],
)
def test_frame_aligner(
    frames: list[bytes], expected: list[bytes], pending: int, dropped: int
) -> None:
    aligner = FrameAligner()
    assert [aligner.push(f) for f in frames] == expected
    assert (aligner.pending, aligner.dropped) == (pending, dropped)


def test_frame_aligner_even_frame_is_zero_copy() -> None:
    aligner = FrameAligner()
    frame = bytes(range(64)) * 10
    assert aligner.push(frame) is frame


def test_one_corrupt_frame_does_not_shift_the_rest_of_the_call() -> None:
    """Finding 9: a 3-byte frame between 640-byte frames used to shift every later sample
    by one byte (loud noise for the STT, no reply for the rest of the call)."""
    aligner = FrameAligner()
    frames = [bytes([n]) * 640 for n in range(1, 6)]
    out = [aligner.push(frames[0]), aligner.push(b"\x00\x01\x02"), *map(aligner.push, frames[1:])]
    assert out[0] == frames[0]
    assert out[2:] == frames[1:]  # every later frame exactly as sent
    assert aligner.dropped == 1


@given(st.lists(st.binary(max_size=50), max_size=30))
def test_frame_aligner_keeps_samples_whole(frames: list[bytes]) -> None:
    aligner = FrameAligner()
    outs = [aligner.push(f) for f in frames]
    assert all(len(o) % 2 == 0 for o in outs)
    total = sum(len(f) for f in frames)
    assert sum(len(o) for o in outs) == total - aligner.dropped - aligner.pending
    for frame, out in zip(frames, outs, strict=True):
        if len(frame) % 2 == 0 and frame:  # an even frame is passed on untouched
            assert out == frame


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
