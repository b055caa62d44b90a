"""Pure validators for what we send to Knowlarity. Each returns the clean value or raises
:class:`~kpi.errors.InputError`, so a bad input never turns into a request (or a call)."""

from __future__ import annotations

import re
from typing import Literal

from kpi.errors import InputError

CHANNELS = ("Basic", "Advance", "Premium", "Enterprise")
Channel = Literal["Basic", "Advance", "Premium", "Enterprise"]

# E.164: a plus, then 8-15 digits; no country code starts with 0.
_E164 = re.compile(r"\+[1-9][0-9]{7,14}")
_IVR_ID = re.compile(r"[0-9]{1,20}")
_CHANNEL_BY_LOWER: dict[str, Channel] = {
    "basic": "Basic",
    "advance": "Advance",
    "premium": "Premium",
    "enterprise": "Enterprise",
}


def e164(value: str | None, field: str) -> str:
    """A phone number in E.164 (``+919876543210``)."""
    if value is None or not value.strip():
        raise InputError(field, "a phone number is required (E.164, e.g. +919876543210)")
    number = value.strip()
    if not _E164.fullmatch(number):
        raise InputError(
            field, f"{number!r} is not an E.164 number: '+' and 8-15 digits, e.g. +919876543210"
        )
    return number


def optional_e164(value: str | None, field: str) -> str | None:
    return None if value is None or not value.strip() else e164(value, field)


def ivr_id(value: str | None) -> str:
    if value is None or not _IVR_ID.fullmatch(value.strip()):
        raise InputError("ivr_id", f"{value!r} is not an IVR id (digits only, e.g. 1000012345)")
    return value.strip()


def channel(value: str) -> Channel:
    """One of the KPI plan channels (any letter case in, canonical spelling out)."""
    known = _CHANNEL_BY_LOWER.get(value.strip().lower())
    if known is not None:
        return known
    raise InputError("channel", f"{value!r} is not one of {', '.join(CHANNELS)}")


def numbers(values: list[str], field: str) -> list[str]:
    if not values:
        raise InputError(field, "at least one number is required")
    return [e164(v, field) for v in values]


def boolean_string(value: bool) -> str:
    """Knowlarity's "Boolean string" for call_permission_request."""
    return "true" if value else "false"
