"""An incremental Server-Sent Events parser (the WHATWG ``text/event-stream`` rules), pure.

Feed it the bytes as they arrive, in chunks of any size: a chunk may end inside a line,
inside a UTF-8 character, or between the CR and LF of a CRLF. Events are separated by a
blank line; ``data:`` lines (with or without the space after the colon) accumulate, joined
by newlines; lines starting with ``:`` are comments (keep-alives); ``id:`` and ``retry:``
are honoured so a reconnect can resume with ``Last-Event-ID``.

Shared by the Cartesia TTS client and the Knowlarity konnect event stream.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

_EOL = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class SseEvent:
    data: str
    event: str = "message"
    id: str | None = None  # the last event id when this event was dispatched


class SseParser:
    def __init__(self) -> None:
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
        if self._buffer:
            line, self._buffer = self._buffer, ""
            self._line(line, events)
        self._data = []
        self._event_name = ""
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
                self._line(line, events)
            return events
        start = 0
        for end_of_line in _EOL.finditer(buffer):
            self._line(buffer[start : end_of_line.start()], events)
            start = end_of_line.end()
            if end_of_line.group() == "\r" and start == len(buffer):
                self._skip_lf = True
        self._buffer = buffer[start:]
        return events

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
        if self._data:
            events.append(
                SseEvent(
                    data="\n".join(self._data),
                    event=self._event_name or "message",
                    id=self.last_event_id,
                )
            )
        self._data = []
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
