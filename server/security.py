"""Who may open ``/voice``: the shared stream token and the caller's IP address.

Pure functions (no sockets, no settings object) so each rule is unit-tested on its own;
:mod:`server.voice` applies them to a WebSocket handshake before it is accepted.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
from collections.abc import Iterable, Sequence
from typing import TypeAlias

__all__ = [
    "Network",
    "UrlRedactingFilter",
    "client_ip",
    "ip_allowed",
    "parse_networks",
    "redact_urls",
    "tokens_match",
]

Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address


def tokens_match(given: str | None, expected: str) -> bool:
    """Constant-time comparison; an empty expected token never matches anything."""
    if not expected or given is None:
        return False
    # compare_digest on bytes: str needs ASCII, and a token in a URL may not be.
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """``["10.0.0.0/8", "1.2.3.4"]`` -> networks (a bare address is a /32 or /128)."""
    return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values if v.strip())


def _address(text: str) -> Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[::1]:443" from some proxies
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "1.2.3.4:5678"
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:1.2.3.4 from a dual-stack socket
    return address


def _inside(address: Address, networks: Sequence[Network]) -> bool:
    return any(address.version == net.version and address in net for net in networks)


def client_ip(
    peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[Network]
) -> str | None:
    """The address of whoever really connected, or None if it cannot be known.

    ``X-Forwarded-For`` is believed only when ``peer`` is a trusted proxy; then the list
    is read right to left (each proxy appends the address it saw) and the first address
    that is not itself a trusted proxy is the client. Anything left of it could be forged
    by the client, so it is never used.
    """
    address = _address(peer) if peer else None
    if address is None:
        return None
    if not _inside(address, trusted):
        return str(address)
    hops = [hop for header in forwarded_for for hop in header.split(",")]
    for hop in reversed(hops):
        hop_address = _address(hop)
        if hop_address is None:
            return None  # a garbled chain: refuse to guess
        if not _inside(hop_address, trusted):
            return str(hop_address)
        address = hop_address
    return str(address)  # every hop is a trusted proxy: the leftmost one is the client


def ip_allowed(ip: str | None, allowed: Sequence[Network]) -> bool:
    """An empty allow-list admits everyone; otherwise an unknown address is refused."""
    if not allowed:
        return True
    address = _address(ip) if ip else None
    return address is not None and _inside(address, allowed)


# --- logs -----------------------------------------------------------------------------

# The stream token is part of the URL (/voice/<token> or ?token=...). Uvicorn logs the
# path of every WebSocket handshake ("WebSocket /voice/<token>" [accepted]) through its own
# handlers, which our secret mask never sees, and a percent-encoded token would not match
# the mask anyway; so the URLs themselves are redacted.
_VOICE_PATH = re.compile(r"(/voice/)[^\s\"'?#]+")
_TOKEN_QUERY = re.compile(r"([?&]token=)[^&\s\"'#]*", re.IGNORECASE)
_REDACTED = "***"


def redact_urls(text: str) -> str:
    """Hide stream tokens in ``/voice/<token>`` paths and ``token=`` query parameters."""
    if "/voice/" not in text and "token=" not in text.lower():
        return text
    text = _VOICE_PATH.sub(rf"\g<1>{_REDACTED}", text)
    return _TOKEN_QUERY.sub(rf"\g<1>{_REDACTED}", text)


class UrlRedactingFilter(logging.Filter):
    """For uvicorn's loggers: handshake and access lines carry the request path."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if redact_urls(message) == message:
            return True
        if isinstance(record.args, tuple):
            # Redact the arguments and keep them: uvicorn's access formatter unpacks
            # record.args (client, method, path, version, status) itself.
            record.args = tuple(
                redact_urls(arg) if isinstance(arg, str) else arg for arg in record.args
            )
            message = record.getMessage()
            if redact_urls(message) == message:
                return True
        record.msg, record.args = redact_urls(message), None
        return True
