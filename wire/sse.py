"""An incremental Server-Sent Events parser (the WHATWG ``text/event-stream`` rules), pure.

Feed it the bytes as they arrive, in chunks of any size: a chunk may end inside a line,
inside a UTF-8 character, or between the CR and LF of a CRLF. Events are separated by a
blank line; ``data:`` lines (with or without the space after the colon) accumulate, joined
by newlines; lines starting with ``:`` are comments (keep-alives); ``id:`` and ``retry:``
are honoured so a reconnect can resume with ``Last-Event-ID``.

Shared by the Cartesia TTS client and the Knowlarity konnect event stream. Memory is
bounded: a line longer than ``max_line_chars`` is skipped to its end, an event whose data
grows past ``max_event_chars`` is dropped; ``dropped`` counts both.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

_EOL = re.compile(r"\r\n|\r|\n")
# Cartesia sends base64 audio in each event (tens of KiB); a few MiB is far beyond any
# real event and still bounds what a broken or hostile server can make us hold.
MAX_LINE_CHARS = 4 * 1024 * 1024
MAX_EVENT_CHARS = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SseEvent:
    data: str
    event: str = "message"
    id: str | None = None  # the last event id when this event was dispatched


class SseParser:
    def __init__(
        self, *, max_line_chars: int = MAX_LINE_CHARS, max_event_chars: int = MAX_EVENT_CHARS
    ) -> None:
        self.max_line_chars = max_line_chars
        self.max_event_chars = max_event_chars
        self.dropped = 0  # over-long lines and oversized events skipped
        self._skipping_line = False  # inside a line that was too long: skip to its end
        self._data_chars = 0
        self._oversized = False  # this event's data grew too large: drop it at dispatch
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._skip_lf = False  # the previous chunk ended with CR: a leading LF is its pair
        self._started = False
        self._data: list[str] = []
        self._event_name = ""
        self._id_buffer: str | None = None
        self.last_event_id: str | None = None  # committed at dispatch, used to resume
        self.retry_ms: int | None = None  # the server's reconnection delay, if it sent one
        self.comments = 0

    def feed(self, chunk: bytes | str) -> list[SseEvent]:
        """The events completed by this chunk, in order."""
        text = self._decoder.decode(chunk) if isinstance(chunk, bytes) else chunk
        return self._feed_text(text)

    def close(self) -> list[SseEvent]:
        """End of stream. Per the spec an event without its closing blank line is dropped;
        a final line without a newline is still processed (it may carry an id or retry)."""
        events = self._feed_text(self._decoder.decode(b"", final=True))
        if self._buffer and not self._skipping_line:
            line, self._buffer = self._buffer, ""
            self._line(line, events)
        self._buffer = ""
        self._reset_event()
        return events

    def _feed_text(self, text: str) -> list[SseEvent]:
        events: list[SseEvent] = []
        if not text:
            return events
        if not self._started:
            self._started = True
            if text.startswith("\ufeff"):
                text = text[1:]
        if self._skip_lf and text.startswith("\n"):
            text = text[1:]
        self._skip_lf = False
        buffer = self._buffer + text
        if "\r" not in buffer:  # the common case, split in C rather than by the regex
            *lines, self._buffer = buffer.split("\n")
            for line in lines:
                self._complete_line(line, events)
        else:
            start = 0
            for end_of_line in _EOL.finditer(buffer):
                self._complete_line(buffer[start : end_of_line.start()], events)
                start = end_of_line.end()
                if end_of_line.group() == "\r" and start == len(buffer):
                    self._skip_lf = True
            self._buffer = buffer[start:]
        if len(self._buffer) > self.max_line_chars:
            self._buffer = ""  # keep none of it; the rest of the line is skipped too
            if not self._skipping_line:
                self._skipping_line = True
                self.dropped += 1
        elif self._skipping_line:
            self._buffer = ""
        return events

    def _complete_line(self, line: str, events: list[SseEvent]) -> None:
        if self._skipping_line:
            self._skipping_line = False  # the end of the over-long line: resume after it
            return
        if len(line) > self.max_line_chars:
            self.dropped += 1
            return
        self._line(line, events)

    def _line(self, line: str, events: list[SseEvent]) -> None:
        if not line:
            self._dispatch(events)
            return
        if line.startswith(":"):
            self.comments += 1
            return
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data_chars += len(value) + 1
            if self._data_chars > self.max_event_chars:
                if not self._oversized:
                    self._oversized = True
                    self.dropped += 1
                self._data = []  # hold nothing more of this event
            else:
                self._data.append(value)
        elif name == "event":
            self._event_name = value
        elif name == "id" and "\0" not in value:
            self._id_buffer = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        # Any other field is ignored, as the spec says.

    def _dispatch(self, events: list[SseEvent]) -> None:
        self.last_event_id = self._id_buffer
        if self._data and not self._oversized:
            events.append(
                SseEvent(
                    data="\n".join(self._data),
                    event=self._event_name or "message",
                    id=self.last_event_id,
                )
            )
        self._reset_event()

    def _reset_event(self) -> None:
        self._data = []
        self._data_chars = 0
        self._oversized = False
        self._event_name = ""


def encode_event(data: str, *, event: str | None = None, id: str | None = None) -> str:
    """One event in wire format (used by the fake server and tests)."""
    lines = []
    if event is not None:
        lines.append(f"event: {event}")
    if id is not None:
        lines.append(f"id: {id}")
    lines.extend(f"data: {line}" for line in _EOL.split(data))
    return "\n".join(lines) + "\n\n"
