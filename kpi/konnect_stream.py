"""The konnect stream's framing: Server-Sent Events, or bare JSON lines. Pure.

The API reference shows both ways of reading ``/update-stream/{SR key}/konnect``: its
JavaScript sample uses ``EventSource`` (SSE: ``data: {...}`` lines, blank line between
events) and its Python sample prints ``r.iter_lines()`` (one JSON object per line). So
each line is classified on its own:

- a line starting with ``{`` is a bare JSON event; if its braces do not close on that
  line (the reference prints its sample events over several lines) the following lines
  join it until they do;
- ``data:``, ``event:``, ``id:``, ``retry:``, comments and blank lines go to the SSE
  parser, which keeps ``id``/``retry`` for reconnects;
- anything else cannot be an event: it is counted and described in ``unparsed`` for the
  caller to log (never silently lost).

Buffers are bounded: a line over ``max_line_chars`` or a multi-line event over
``max_event_chars`` is dropped (and reported) rather than held.
"""

from __future__ import annotations

import codecs
import re

from wire.sse import SseParser

__all__ = ["KonnectFramer"]

MAX_LINE_CHARS = 64 * 1024
MAX_EVENT_CHARS = 256 * 1024
_EOL = re.compile(r"\r\n|\r|\n")
_SSE_FIELDS = ("data", "event", "id", "retry")


class KonnectFramer:
    def __init__(
        self, *, max_line_chars: int = MAX_LINE_CHARS, max_event_chars: int = MAX_EVENT_CHARS
    ) -> None:
        self.max_line_chars = max_line_chars
        self.max_event_chars = max_event_chars
        self.sse = SseParser(max_line_chars=max_line_chars, max_event_chars=max_event_chars)
        self.unparsed: list[str] = []  # short descriptions of input that was no event
        self.json_lines = 0  # events that came as bare JSON (for the log)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._skip_lf = False
        self._skipping_line = False
        self._started = False
        self._object: list[str] = []  # lines of a bare JSON object still open
        self._object_chars = 0
        self._depth = 0
        self._in_string = False
        self._escaped = False

    def feed(self, chunk: bytes) -> list[str]:
        """The event payloads (JSON text) this chunk completes, in order."""
        return self._feed_text(self._decoder.decode(chunk))

    def close(self) -> list[str]:
        """End of stream: a last line without its newline still counts."""
        payloads = self._feed_text(self._decoder.decode(b"", final=True))
        if self._buffer and not self._skipping_line:
            line, self._buffer = self._buffer, ""
            self._line(line, payloads)
        if self._object:
            self._report(f"an unfinished JSON event ({self._object_chars} chars)")
            self._object = []
        for event in self.sse.close():
            payloads.append(event.data)
        return payloads

    def take_unparsed(self) -> list[str]:
        taken, self.unparsed = self.unparsed, []
        return taken

    # --- lines ---------------------------------------------------------------------------

    def _feed_text(self, text: str) -> list[str]:
        payloads: list[str] = []
        if not text:
            return payloads
        if not self._started:
            self._started = True
            text = text.removeprefix("\ufeff")
        if self._skip_lf and text.startswith("\n"):
            text = text[1:]
        self._skip_lf = False
        buffer = self._buffer + text
        start = 0
        for end in _EOL.finditer(buffer):
            self._complete(buffer[start : end.start()], payloads)
            start = end.end()
            if end.group() == "\r" and start == len(buffer):
                self._skip_lf = True
        self._buffer = buffer[start:]
        if self._skipping_line:
            self._buffer = ""
        elif len(self._buffer) > self.max_line_chars:
            self._buffer = ""
            self._skipping_line = True
            self._report(f"a line longer than {self.max_line_chars} chars")
        return payloads

    def _complete(self, line: str, payloads: list[str]) -> None:
        if self._skipping_line:
            self._skipping_line = False
            return
        if len(line) > self.max_line_chars:
            self._report(f"a line longer than {self.max_line_chars} chars")
            return
        self._line(line, payloads)

    def _line(self, line: str, payloads: list[str]) -> None:
        if self._object:
            self._continue_object(line, payloads)
            return
        stripped = line.strip()
        if stripped.startswith("{"):
            self.json_lines += 1
            self._object_chars = 0
            self._continue_object(line, payloads)
            return
        if not stripped or stripped.startswith(":") or line.partition(":")[0] in _SSE_FIELDS:
            before = self.sse.dropped
            payloads.extend(event.data for event in self.sse.feed(line + "\n"))
            if self.sse.dropped > before:
                self._report(f"an SSE event larger than {self.max_event_chars} chars")
            return
        self._report(f"not an event: {_describe(line)}")

    def _continue_object(self, line: str, payloads: list[str]) -> None:
        self._object.append(line)
        self._object_chars += len(line) + 1
        if self._object_chars > self.max_event_chars:
            self._report(f"a JSON event larger than {self.max_event_chars} chars")
            self._object = []
            self._reset_scan()
            return
        self._scan(line)
        if self._depth <= 0:
            payloads.append("\n".join(self._object))
            self._object = []
            self._reset_scan()

    def _scan(self, line: str) -> None:
        """Track brace depth outside JSON strings (linear; only for open objects)."""
        depth, in_string, escaped = self._depth, self._in_string, self._escaped
        for char in line:
            if in_string:
                if escaped:
                    escaped = False
                elif char == "\\":
                    escaped = True
                elif char == '"':
                    in_string = False
            elif char == '"':
                in_string = True
            elif char in "{[":
                depth += 1
            elif char in "}]":
                depth -= 1
                if depth <= 0:
                    break  # anything after the closing brace is the event's own problem
        self._depth, self._in_string, self._escaped = depth, in_string, escaped

    def _reset_scan(self) -> None:
        self._depth, self._in_string, self._escaped = 0, False, False

    def _report(self, what: str) -> None:
        if len(self.unparsed) < 100:  # the caller drains these after every chunk
            self.unparsed.append(what)


def _describe(line: str, limit: int = 80) -> str:
    text = repr(line[:limit])
    return text if len(line) <= limit else f"{text}… (+{len(line) - limit} chars)"
