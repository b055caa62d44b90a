"""Knowlarity Voice Streaming frame protocol, sans I/O.

Inbound: one metadata text frame, then binary 16-bit LE mono PCM frames of any length.
Outbound: JSON text frames ``playAudio`` / ``killAudio`` / ``transfer`` / ``disconnect``.
Nothing here touches sockets or asyncio; the WebSocket layer only moves frames.

Exceptions::

    ValueError
     └── ProtocolError
          ├── MetadataError   the metadata frame could not be used
          └── UnknownEvent    an outgoing frame is not one of the four events
"""

from __future__ import annotations

import binascii
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, TypeAlias

from wire.metadata_literal import LiteralError, parse_literal

__all__ = [
    "CALL_ID_MAX_CHARS",
    "HARD_MAX_METADATA_BYTES",
    "MAX_METADATA_BYTES",
    "MAX_METADATA_DEPTH",
    "CallMetadata",
    "Disconnect",
    "FrameAligner",
    "KillAudio",
    "MetadataError",
    "OutgoingEvent",
    "PlayAudio",
    "ProtocolError",
    "Transfer",
    "UnknownEvent",
    "describe_frame",
    "disconnect",
    "generated_metadata",
    "kill_audio",
    "parse_metadata",
    "parse_outgoing",
    "play_audio",
    "play_audio_wav",
    "transfer",
    "valid_call_id",
]

# Metadata is four short fields (a few hundred bytes); a Stream Node may add a few keys.
MAX_METADATA_BYTES: Final = 4096
HARD_MAX_METADATA_BYTES: Final = 8192  # the ceiling of the MAX_METADATA_BYTES setting
# Real metadata is a flat dict; json recurses per level, so cap nesting first.
MAX_METADATA_DEPTH: Final = 16
# A call id becomes the log context of every line of its call: no spaces, quotes, control
# characters or line breaks (forged log lines), and short. Knowlarity sends a UUID.
CALL_ID_MAX_CHARS: Final = 128
_CALL_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._:@+=-]{{0,{CALL_ID_MAX_CHARS - 1}}}")
FIELD_MAX_CHARS: Final = 64  # virtual_number, customer_number, call_type as logged

_CALL_ID_KEYS: Final = ("callid", "call_id", "callId", "uuid")
_KNOWN_KEYS: Final = ("virtual_number", "customer_number", "call_type")
_BOM: Final = "\ufeff"
_BRACKETS = re.compile(r"[\[\]{}()]")
_EMPTY: Mapping[str, object] = MappingProxyType({})


class ProtocolError(ValueError):
    """Root of this module's errors."""


class MetadataError(ProtocolError):
    """The metadata frame is unusable; the caller falls back to generated_metadata()."""


class UnknownEvent(ProtocolError):
    """An outgoing frame that is not a well-formed playAudio/killAudio/transfer/disconnect."""


@dataclass(frozen=True, slots=True)
class CallMetadata:
    call_id: str
    virtual_number: str = ""
    customer_number: str = ""
    call_type: str = ""
    # Read-only view of every other key, kept for logs and the call record.
    extra: Mapping[str, object] = field(default_factory=lambda: _EMPTY, hash=False)
    # Why the frame's own call id was not used (log-safe), when one was generated instead.
    refused_call_id: str = ""


# --- metadata -------------------------------------------------------------------------


def parse_metadata(raw: str | bytes, *, max_bytes: int = MAX_METADATA_BYTES) -> CallMetadata:
    """Parse the first text frame in any of the forms Knowlarity has been seen to send.

    Accepted: a JSON object; a JSON string wrapping a Python-style dict (the documented
    form); a bare Python dict literal; all with optional BOM and surrounding whitespace.
    Raises MetadataError; never evaluates code (only json and the restricted literal
    parser of :mod:`wire.metadata_literal`, both linear in the capped input).
    ``max_bytes`` can lower the cap, never raise it above HARD_MAX_METADATA_BYTES.
    A call id that is not a safe token (see CALL_ID_MAX_CHARS) is replaced by a generated
    one; the other fields are kept, and ``refused_call_id`` says what was refused.
    """
    max_bytes = min(max_bytes, HARD_MAX_METADATA_BYTES)
    text = _decode(raw, max_bytes)
    value: object = _load(text)
    # The documented form is a JSON string holding the dict; allow one more wrapping.
    for _ in range(2):
        if not isinstance(value, str):
            break
        value = _load(_clean(value))
    if not isinstance(value, dict):
        raise MetadataError(f"not a dict (got {type(value).__name__})")
    return _from_dict(value)


def generated_metadata(extra: Mapping[str, object] | None = None) -> CallMetadata:
    """Metadata for a call whose frame was missing or unusable."""
    return CallMetadata(
        call_id=_generated_id(),
        extra=MappingProxyType(dict(extra)) if extra else _EMPTY,
    )


def _generated_id() -> str:
    return f"gen-{uuid.uuid4().hex[:12]}"


def _decode(raw: str | bytes, max_bytes: int) -> str:
    if isinstance(raw, str):
        # Cheap bound first: a str never has more code points than UTF-8 bytes.
        size = len(raw)
        if size <= max_bytes and not raw.isascii():
            size = len(raw.encode("utf-8", "surrogatepass"))
        if size > max_bytes:
            raise MetadataError(f"too large ({size} bytes > {max_bytes})")
        return _clean(raw)
    if len(raw) > max_bytes:
        raise MetadataError(f"too large ({len(raw)} bytes > {max_bytes})")
    try:
        return _clean(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise MetadataError(f"not valid UTF-8 ({exc.reason} at byte {exc.start})") from exc


def _clean(text: str) -> str:
    text = text.strip().lstrip(_BOM).strip()
    if not text:
        raise MetadataError("empty")
    return text


def _check_depth(text: str) -> None:
    # Counting openers is O(n) in C; only when there are many do we track real depth.
    # Brackets inside strings are counted too: harmless for real metadata, safe for bombs.
    openers = text.count("{") + text.count("[") + text.count("(")
    if openers <= MAX_METADATA_DEPTH:
        return
    depth = 0
    for ch in _BRACKETS.findall(text):
        if ch in "{[(":
            depth += 1
            if depth > MAX_METADATA_DEPTH:
                raise MetadataError(f"nested too deeply (> {MAX_METADATA_DEPTH} levels)")
        else:
            depth -= 1


def _load(text: str) -> object:
    _check_depth(text)
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        pass  # not JSON: try a Python literal (the documented single-quoted dict)
    try:
        return parse_literal(text, max_depth=MAX_METADATA_DEPTH)
    except LiteralError as exc:
        raise MetadataError(f"invalid literal ({str(exc)[:80]})") from exc


def _as_text(value: object) -> str:
    return "" if value is None else str(value).strip()


def _field_text(value: object) -> str:
    """A metadata field as it may be logged: one short line of printable characters."""
    text = _as_text(value)
    if len(text) > FIELD_MAX_CHARS:
        text = text[:FIELD_MAX_CHARS]
    if not text.isprintable():
        text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text


def valid_call_id(call_id: str) -> bool:
    """A safe token: letters, digits and ``._:@+=-``, at most CALL_ID_MAX_CHARS long."""
    return _CALL_ID.fullmatch(call_id) is not None


def _from_dict(data: dict[object, object]) -> CallMetadata:
    items = {str(k): v for k, v in data.items()}
    call_id = ""
    for key in _CALL_ID_KEYS:
        if key in items:
            call_id = _as_text(items[key])
            if call_id:
                del items[key]
                break
    if not call_id:
        raise MetadataError("missing callid")
    refused = ""
    if not valid_call_id(call_id):
        refused = describe_frame(repr(call_id), 60)
        call_id = _generated_id()
    known = [_field_text(items.pop(key, None)) for key in _KNOWN_KEYS]
    return CallMetadata(
        call_id=call_id,
        virtual_number=known[0],
        customer_number=known[1],
        call_type=known[2],
        extra=MappingProxyType(items) if items else _EMPTY,
        refused_call_id=refused,
    )


# --- outgoing events ------------------------------------------------------------------

# Key order and compact separators exactly as in the Knowlarity documentation.
_PLAY_PREFIX: Final = '{"type":"playAudio","data":{"audioContentType":"wav","audioContent":"'
_PLAY_SUFFIX: Final = '"}}'
_KILL_AUDIO: Final = '{"type":"killAudio"}'
_DISCONNECT: Final = '{"type":"disconnect"}'
_TRANSFER_PREFIX: Final = '{"type":"transfer","data":{"destination":'


def play_audio(wav_b64: str) -> str:
    """playAudio frame for standard base64 of a WAV file.

    Built by concatenation (one allocation): base64 text needs no JSON escaping.
    """
    return f"{_PLAY_PREFIX}{wav_b64}{_PLAY_SUFFIX}"


def play_audio_wav(wav: bytes | bytearray | memoryview) -> str:
    """playAudio frame for a WAV file given as bytes."""
    b64 = binascii.b2a_base64(wav, newline=False).decode("ascii")
    return f"{_PLAY_PREFIX}{b64}{_PLAY_SUFFIX}"


def kill_audio() -> str:
    return _KILL_AUDIO


def transfer(destination: str) -> str:
    if not destination.strip():
        raise ValueError("transfer destination is empty")
    return f"{_TRANSFER_PREFIX}{json.dumps(destination)}}}}}"


def disconnect() -> str:
    return _DISCONNECT


@dataclass(frozen=True, slots=True, repr=False)
class PlayAudio:
    wav: bytes

    def __repr__(self) -> str:  # never dump audio into logs or test output
        return f"PlayAudio(wav=<{len(self.wav)} bytes>)"


@dataclass(frozen=True, slots=True)
class KillAudio:
    pass


@dataclass(frozen=True, slots=True)
class Transfer:
    destination: str


@dataclass(frozen=True, slots=True)
class Disconnect:
    pass


OutgoingEvent: TypeAlias = PlayAudio | KillAudio | Transfer | Disconnect


def parse_outgoing(text: str) -> OutgoingEvent:
    """Typed view of a frame we send; used by the simulator and tests."""
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise UnknownEvent(f"not JSON: {describe_frame(text, 60)}") from exc
    if not isinstance(msg, dict):
        raise UnknownEvent(f"not an object: {describe_frame(text, 60)}")
    kind = msg.get("type")
    data = msg.get("data")
    if kind == "killAudio":
        return KillAudio()
    if kind == "disconnect":
        return Disconnect()
    if kind == "transfer":
        dest = data.get("destination") if isinstance(data, dict) else None
        if not isinstance(dest, str) or not dest:
            raise UnknownEvent("transfer without a destination")
        return Transfer(dest)
    if kind == "playAudio":
        return PlayAudio(_play_payload(data))
    raise UnknownEvent(f"unknown event type {kind!r}")


def _play_payload(data: object) -> bytes:
    if not isinstance(data, dict):
        raise UnknownEvent("playAudio without data")
    if data.get("audioContentType") != "wav":
        raise UnknownEvent(f"playAudio content type {data.get('audioContentType')!r} != 'wav'")
    content = data.get("audioContent")
    if not isinstance(content, str):
        raise UnknownEvent("playAudio without audioContent")
    try:
        return binascii.a2b_base64(content, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise UnknownEvent(f"playAudio audioContent is not base64: {exc}") from exc


# --- inbound audio --------------------------------------------------------------------


class FrameAligner:
    """Keeps caller PCM in whole 16-bit samples across frames of odd length.

    An odd frame's last byte is held back. It is joined to the next frame only if that
    frame is odd too (a sample really split across two frames); if the next frame is even,
    the held byte was a stray (a corrupt or truncated frame) and is dropped, so one bad
    frame never shifts the samples of the rest of the call. ``dropped`` counts such bytes.
    Empty frames change nothing.
    """

    __slots__ = ("_carry", "dropped")

    def __init__(self) -> None:
        self._carry = b""  # b"" or one byte
        self.dropped = 0

    @property
    def pending(self) -> int:
        return len(self._carry)

    def push(self, data: bytes) -> bytes:
        if not data:
            return b""
        odd = len(data) & 1
        carry = self._carry
        if carry and odd:
            self._carry = b""
            return b"".join((carry, data))  # the split sample, made whole; one copy
        if carry:
            self._carry = b""
            self.dropped += 1  # the held byte had no partner: a stray, not a half sample
        if not odd:
            return data  # the common case: no copy
        self._carry = data[-1:]
        return data[:-1]


# --- logging --------------------------------------------------------------------------

_AUDIO_CONTENT = re.compile(r'"audioContent"\s*:\s*"')
_PLAY_OVERHEAD: Final = len(_PLAY_PREFIX) + len(_PLAY_SUFFIX)


def describe_frame(text: str, limit: int = 120) -> str:
    """A frame trimmed for logs: audio payloads become a length, long text is cut."""
    if text.startswith(_PLAY_PREFIX) and text.endswith(_PLAY_SUFFIX):
        return f"playAudio(wav, {len(text) - _PLAY_OVERHEAD} b64 chars)"
    m = _AUDIO_CONTENT.search(text)
    if m is not None:
        end = text.find('"', m.end())
        end = len(text) if end < 0 else end
        text = f"{text[: m.end()]}<{end - m.end()} b64 chars>{text[end:]}"
    if len(text) > limit:
        text = f"{text[:limit]}… (+{len(text) - limit} chars)"
    # One log line per frame, even for the documented multi-line dict.
    return text.replace("\r", "\\r").replace("\n", "\\n")
