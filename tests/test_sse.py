"""The incremental SSE parser, pure: the WHATWG rules, and any chunking of the bytes."""

from __future__ import annotations

import itertools
import json

from hypothesis import given
from hypothesis import strategies as st

from wire.sse import SseEvent, SseParser, encode_event


def feed_all(chunks: list[bytes]) -> tuple[list[SseEvent], SseParser]:
    parser = SseParser()
    events: list[SseEvent] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    events.extend(parser.close())
    return events, parser


def test_blank_line_separates_events() -> None:
    events, _ = feed_all([b"data: one\n\ndata: two\n\n"])
    assert [e.data for e in events] == ["one", "two"]
    assert events[0].event == "message"


def test_data_with_and_without_space() -> None:
    events, _ = feed_all([b'data:{"a":1}\n\ndata: {"a":2}\n\ndata:  two spaces\n\n'])
    assert [e.data for e in events] == ['{"a":1}', '{"a":2}', " two spaces"]


def test_multiline_data_joined_with_newlines() -> None:
    payload = {"event_type": "HANGUP", "uuid": "u-1"}
    text = "".join(f"data: {line}\n" for line in json.dumps(payload, indent=2).split("\n"))
    events, _ = feed_all([(text + "\n").encode()])
    assert json.loads(events[0].data) == payload
    assert events[0].data.count("\n") == 3


def test_comments_are_ignored_and_counted() -> None:
    events, parser = feed_all([b": keep-alive\n\n:\n\ndata: x\n: inline comment\n\n"])
    assert [e.data for e in events] == ["x"]
    assert parser.comments == 3


def test_crlf_cr_and_lf_line_endings() -> None:
    events, _ = feed_all([b"data: a\r\n\r\ndata: b\r\rdata: c\n\n"])
    assert [e.data for e in events] == ["a", "b", "c"]


def test_crlf_split_between_chunks_is_one_line_end() -> None:
    # "\r" ends one chunk and "\n" starts the next: that is one line end, not two, so
    # the event is dispatched once, by the real blank line.
    events, _ = feed_all([b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"])
    assert [e.data for e in events] == ["a\nb"]


def test_utf8_character_split_across_chunks() -> None:
    raw = "data: नमस्ते ₹\n\n".encode()
    events, _ = feed_all([raw[i : i + 1] for i in range(len(raw))])
    assert events[0].data == "नमस्ते ₹"


def test_event_id_and_name_and_retry() -> None:
    events, parser = feed_all([b"event: cdr\nid: 7\nretry: 2500\ndata: x\n\ndata: y\n\n"])
    assert events[0] == SseEvent(data="x", event="cdr", id="7")
    assert events[1] == SseEvent(data="y", event="message", id="7")  # the id persists
    assert parser.last_event_id == "7"
    assert parser.retry_ms == 2500


def test_bad_retry_and_nul_id_are_ignored() -> None:
    _, parser = feed_all([b"retry: soon\nid: a\x00b\ndata: x\n\n"])
    assert parser.retry_ms is None
    assert parser.last_event_id is None


def test_incomplete_event_at_end_is_dropped_but_id_not_committed() -> None:
    events, parser = feed_all([b"id: 1\ndata: complete\n\nid: 2\ndata: half"])
    assert [e.data for e in events] == ["complete"]
    assert parser.last_event_id == "1"  # resume from the last event actually delivered


def test_bom_is_stripped_and_unknown_fields_ignored() -> None:
    events, _ = feed_all([b"\xef\xbb\xbfdata: x\nfoo: bar\nnocolon\n\n"])
    assert [e.data for e in events] == ["x"]


def test_empty_data_lines_and_data_without_colon() -> None:
    events, _ = feed_all([b"data\ndata\n\ndata:\n\n"])
    assert [e.data for e in events] == ["\n", ""]


def test_str_chunks_are_accepted() -> None:
    parser = SseParser()
    assert [e.data for e in parser.feed("data: x\n\n")] == ["x"]


_text = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\r\n\x00"),
    max_size=30,
)


@given(
    payloads=st.lists(st.lists(_text, min_size=1, max_size=3), min_size=1, max_size=5),
    newline=st.sampled_from(["\n", "\r\n", "\r"]),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=20),
)
def test_any_chunking_gives_the_same_events(
    payloads: list[list[str]], newline: str, cuts: list[int]
) -> None:
    wire = ""
    for i, lines in enumerate(payloads):
        wire += f"id: {i}{newline}"
        wire += "".join(f"data: {line}{newline}" for line in lines)
        wire += f": comment {i}{newline}{newline}"
    raw = wire.encode()
    points = sorted({c % (len(raw) + 1) for c in cuts} | {0, len(raw)})
    chunks = [raw[a:b] for a, b in itertools.pairwise(points)]
    whole, _ = feed_all([raw])
    split, _ = feed_all(chunks)
    assert split == whole
    assert [e.data for e in whole] == ["\n".join(lines) for lines in payloads]
    assert [e.id for e in whole] == [str(i) for i in range(len(payloads))]


def test_encode_event_round_trips() -> None:
    wire = encode_event("a\nb", event="x", id="9")
    events, _ = feed_all([wire.encode()])
    assert events == [SseEvent(data="a\nb", event="x", id="9")]


# --- bounded buffers (issue 12, finding 10) ------------------------------------------------


def test_an_endless_line_is_skipped_without_being_held() -> None:
    parser = SseParser(max_line_chars=1000, max_event_chars=5000)
    events: list[SseEvent] = []
    events += parser.feed(b"data: before\n\n")
    for _ in range(100):  # 100 KB of one line, no newline in sight
        events += parser.feed(b"data: " + b"x" * 1000)
        assert len(parser._buffer) <= 1000
    events += parser.feed(b"\ndata: after\n\n")
    assert [e.data for e in events] == ["before", "after"]
    assert parser.dropped == 1


def test_an_oversized_event_is_dropped_and_the_next_one_kept() -> None:
    parser = SseParser(max_line_chars=1000, max_event_chars=5000)
    line = b"data: " + b"y" * 900 + b"\n"
    events = parser.feed(line * 20 + b"\n" + b"data: next\n\n")
    assert [e.data for e in events] == ["next"]
    assert parser.dropped == 1
    assert parser._data == []


def test_a_long_line_split_over_chunks_with_crlf() -> None:
    parser = SseParser(max_line_chars=10)
    events = parser.feed(b"data: 0123456789abc\r")
    events += parser.feed(b"\ndata: ok\r\n\r\n")
    assert [e.data for e in events] == ["ok"]
    assert parser.dropped == 1
