"""The Knowlarity account API's requests as plain data: bodies, queries, paging.

Pure and validated, so every request shape is unit-tested without a socket.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, urlsplit

from kpi import validation
from kpi.models import PageMeta


def makecall_body(
    *,
    k_number: str | None,
    agent_number: str | None,
    customer_number: str,
    caller_id: str | None = None,
    whatsapp: bool = False,
    call_permission_request: bool | None = None,
) -> dict[str, str]:
    """The makecall JSON body, validated; field names as in the API reference."""
    body = {
        "k_number": validation.e164(k_number, "k_number"),
        "agent_number": validation.e164(agent_number, "agent_number"),
        "customer_number": validation.e164(customer_number, "customer_number"),
    }
    caller = validation.optional_e164(caller_id, "caller_id")
    if caller is not None:
        body["caller_id"] = caller
    body.update(_whatsapp_fields(whatsapp, call_permission_request))
    return body


def otpcall_query(
    *,
    ivr_id: str,
    k_number: str | None,
    customer_number: str,
    whatsapp: bool = False,
    call_permission_request: bool | None = None,
) -> str:
    """The otpcall query string, validated, ``+`` encoded as ``%2B`` as documented."""
    params = [
        ("ivr_id", validation.ivr_id(ivr_id)),
        ("k_number", validation.e164(k_number, "k_number")),
        ("customer_number", validation.e164(customer_number, "customer_number")),
        *_whatsapp_fields(whatsapp, call_permission_request).items(),
    ]
    return encode_query(params)


def _whatsapp_fields(whatsapp: bool, call_permission_request: bool | None) -> dict[str, str]:
    # Both are required for WhatsApp Voice and optional for PSTN.
    fields = {}
    if whatsapp:
        fields["channel"] = "Whatsapp"
    if whatsapp or call_permission_request is not None:
        fields["call_permission_request"] = validation.boolean_string(bool(call_permission_request))
    return fields


def notifications_filters(
    knowlarity_number: str | None, enabled: bool | None
) -> list[tuple[str, str]]:
    filters = []
    number = validation.optional_e164(knowlarity_number, "knowlarity_number")
    if number is not None:
        filters.append(("knowlarity_number", number))
    if enabled is not None:
        filters.append(("enabled", "True" if enabled else "False"))  # "True or False"
    return filters


def encode_query(params: Iterable[tuple[str, str]]) -> str:
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params)


def next_page(meta: PageMeta | None, current: dict[str, str], count: int) -> dict[str, str] | None:
    """The paging parameters of the page after this one, or None at the end.

    ``meta.next`` is usually a path with ``limit`` and ``offset``; those are sent again
    to our own documented path (never to whatever host ``next`` names). A ``next`` without
    an offset (an opaque cursor) continues by offset.
    """
    if meta is None or not meta.next:
        return None
    wanted = dict(parse_qsl(urlsplit(meta.next).query))
    if wanted.get("offset", "").isdigit():
        return {k: wanted[k] for k in ("limit", "offset") if wanted.get(k, "").isdigit()}
    offset = _as_int(meta.offset)
    if offset is None:
        offset = _as_int(current.get("offset")) or 0
    following = {"offset": str(offset + count)}
    limit = _as_int(meta.limit)
    if limit:
        following["limit"] = str(limit)
    return following


def _as_int(value: object) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None
