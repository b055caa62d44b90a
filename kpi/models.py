"""Typed shapes of the Knowlarity account API: answers, live events, and our /api bodies.

Knowlarity's answers and events are open models: fields we do not name are kept (and
dumped back with :meth:`raw`), so nothing Knowlarity sends is lost on the way through.
Field names follow the API reference exactly, including ``Call_Type`` and ``dispnumber``.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from kpi import validation


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True)

    def raw(self) -> dict[str, Any]:
        """The fields as Knowlarity sent them (no defaults added)."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


# --- REST answers -------------------------------------------------------------------


class CallSuccess(_Open):
    status: str | None = None
    message: str | None = None


class MakeCallResult(_Open):
    """``{"success": {"status": "success", "message": "Call successfully placed"}}``"""

    success: CallSuccess


class OtpCallSuccess(_Open):
    call_id: str | None = None
    message: str | None = None
    status: str | None = None


class OtpCallResult(_Open):
    """``{"success": {"call_id": ..., "message": ..., "status": "initiated"}}``"""

    success: OtpCallSuccess


class MessageResult(_Open):
    """``{"message": "Successfully registered."}`` and the enable/disable answers."""

    message: str


class PageMeta(_Open):
    limit: int | str | None = None
    next: str | None = None
    offset: int | str | None = None
    previous: str | None = None
    total_count: int | str | None = None


# Credentials Knowlarity passes through in registrations and events: an integration's
# Knowlarity key (k_api_key), its CRM key (app_api_key) and CRM login (app_data, e.g.
# '{"username": "admin", "password": "..."}' in the reference). They are dropped on the
# way in, so no log line, /api answer or CLI output can carry them.
_CREDENTIAL_FIELDS = frozenset({"k_api_key", "app_api_key", "app_data"})
_CREDENTIAL_NAME = re.compile(r"api_?key|secret|passw(or)?d|token|credential", re.IGNORECASE)


def drop_credentials(value: Any) -> Any:
    """``value`` with credential-like keys removed from every mapping in it."""
    if isinstance(value, dict):
        return {
            k: drop_credentials(v)
            for k, v in value.items()
            if not (isinstance(k, str) and (k in _CREDENTIAL_FIELDS or _CREDENTIAL_NAME.search(k)))
        }
    if isinstance(value, list):
        return [drop_credentials(v) for v in value]
    return value


class NotificationRegistration(_Open):
    """One registered integration, as List Registrations returns it (credentials dropped)."""

    @model_validator(mode="before")
    @classmethod
    def _no_credentials(cls, data: Any) -> Any:
        return drop_credentials(data)

    id: int | str | None = None
    k_number: str | None = None
    k_number_cc: str | None = None
    enable: bool | None = None
    expired: bool | None = None
    product: str | None = None
    date_updated: str | None = None
    resource_uri: str | None = None


class NotificationList(_Open):
    meta: PageMeta | None = None
    objects: list[NotificationRegistration] = Field(default_factory=list)


# --- live events (konnect stream) ---------------------------------------------------

# ``type`` values public integrations see instead of ``event_type``.
PUBLIC_EVENT_TYPES = frozenset(
    {"AGENT_CALL", "AGENT_ANSWER", "CUSTOMER_CALL", "CUSTOMER_ANSWER", "BRIDGE", "HANGUP"}
)


class TelephonyEvent(_Open):
    """A call-progress event: keyed by ``event_type`` (ORIGINATE, ANSWER, HANGUP...) or, for
    public integrations, by ``type`` (AGENT_CALL ... BRIDGE, HANGUP)."""

    event_type: str | None = None
    type: str | None = None
    uuid: str | None = None
    call_direction: str | None = None
    business_call_type: str | None = None
    agent_number: str | None = None
    customer_number: str | None = None
    knowlarity_number: str | None = None
    k_number: str | None = None  # deprecated alias of knowlarity_number
    call_recording: str | None = None

    @property
    def name(self) -> str:
        extra = self.model_extra or {}
        event = extra.get("event")
        return (self.event_type or self.type or (event if isinstance(event, str) else "")).upper()

    @property
    def is_hangup(self) -> bool:
        return self.name.endswith("HANGUP")

    @property
    def business_number(self) -> str | None:
        return self.knowlarity_number or self.k_number


class CdrEvent(_Open):
    """The call detail record sent after hangup: ``{"type": "CDR", ...}``."""

    type: str = "CDR"
    uuid: str | None = None
    dispnumber: str | None = None
    caller_id: str | None = None
    destination: str | None = None
    call_type: str | None = Field(default=None, alias="Call_Type")
    business_call_type: str | None = None
    start_time: str | None = None
    end_time: str | None = None
    call_duration: int | float | str | None = None
    resource_url: str | None = None
    timezone_offset: str | None = None

    @property
    def name(self) -> str:
        return "CDR"

    @property
    def duration_s(self) -> float | None:
        try:
            return float(self.call_duration) if self.call_duration is not None else None
        except ValueError:
            return None


class UnknownEvent(_Open):
    """Anything else on the stream; ``raw_data`` holds data that was not a JSON object."""

    raw_data: str | None = None

    @property
    def name(self) -> str:
        return ""


KonnectEvent = TelephonyEvent | CdrEvent | UnknownEvent
EventKind = Literal["telephony", "cdr", "unknown"]

_STRAY_COMMA = re.compile(r"(?<=[{,])\s*,")


def parse_event(data: str) -> KonnectEvent:
    """The typed event in one SSE ``data`` payload. Never raises."""
    value = _loads_lenient(data)
    if isinstance(value, str):  # some relays double-encode the JSON
        value = _loads_lenient(value)
    if not isinstance(value, dict):
        return UnknownEvent(raw_data=data)
    # k_api_key is documented as "optional, should be ignored": it is a credential.
    fields = drop_credentials(value)
    try:
        if str(fields.get("type") or "").upper() == "CDR":
            return CdrEvent.model_validate(fields)
        kind = fields.get("type")
        if fields.get("event_type") or fields.get("event") or kind in PUBLIC_EVENT_TYPES:
            return TelephonyEvent.model_validate(fields)
        if isinstance(kind, str) and kind and fields.get("uuid"):
            return TelephonyEvent.model_validate(fields)
    except ValidationError:
        pass  # a known shape with odd field types: keep every field, untyped
    return UnknownEvent.model_validate(fields)


def event_kind(event: KonnectEvent) -> EventKind:
    if isinstance(event, CdrEvent):
        return "cdr"
    if isinstance(event, TelephonyEvent):
        return "telephony"
    return "unknown"


def _loads_lenient(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        pass
    # The reference's own sample event has a stray comma (`null,\n, "call_type"`).
    repaired = _STRAY_COMMA.sub("", text)
    try:
        return json.loads(repaired)
    except ValueError:
        return None


# --- bodies and answers of our /api routes -------------------------------------------


class MakeCallBody(BaseModel):
    """Place a call: Knowlarity rings ``agent_number`` first, then ``customer_number``."""

    model_config = ConfigDict(extra="forbid")

    customer_number: str = Field(description="Customer to call, E.164", examples=["+919876543210"])
    agent_number: str | None = Field(None, description="Default: KNOWLARITY_AGENT_NUMBER")
    k_number: str | None = Field(None, description="Default: KNOWLARITY_NUMBER")
    caller_id: str | None = None
    whatsapp: bool = Field(False, description='Send channel "Whatsapp" (WhatsApp Voice)')
    call_permission_request: bool | None = Field(
        None, description="Ask for WhatsApp calling permission (sent as 'false' if unset)"
    )

    @field_validator("customer_number")
    @classmethod
    def _customer(cls, value: str) -> str:
        return validation.e164(value, "customer_number")

    @field_validator("agent_number", "k_number", "caller_id")
    @classmethod
    def _optional_numbers(cls, value: str | None, info: ValidationInfo) -> str | None:
        return validation.optional_e164(value, str(info.field_name))


class OtpCallBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ivr_id: str = Field(description="IVR / flow id, digits", examples=["1000012345"])
    customer_number: str = Field(description="E.164", examples=["+919876543210"])
    k_number: str | None = Field(None, description="Default: KNOWLARITY_NUMBER")
    whatsapp: bool = False
    call_permission_request: bool | None = None

    @field_validator("ivr_id")
    @classmethod
    def _ivr(cls, value: str) -> str:
        return validation.ivr_id(value)

    @field_validator("customer_number")
    @classmethod
    def _customer(cls, value: str) -> str:
        return validation.e164(value, "customer_number")

    @field_validator("k_number")
    @classmethod
    def _k_number(cls, value: str | None) -> str | None:
        return validation.optional_e164(value, "k_number")


class RegisterNotificationsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    knowlarity_number: list[str] | None = Field(
        None, description="Numbers to register; default [KNOWLARITY_NUMBER]"
    )

    @field_validator("knowlarity_number")
    @classmethod
    def _numbers(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else validation.numbers(value, "knowlarity_number")


class SetNotificationsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    knowlarity_number: str | None = Field(None, description="Default: KNOWLARITY_NUMBER")
    enable: Literal["enable", "disable"]

    @field_validator("knowlarity_number")
    @classmethod
    def _number(cls, value: str | None) -> str | None:
        return validation.optional_e164(value, "knowlarity_number")


class RecentEvent(BaseModel):
    kind: EventKind
    name: str = Field(description="event_type / type of the event, e.g. HANGUP or CDR")
    received_at: float = Field(description="Wall clock, seconds since the epoch")
    call_id: str | None = Field(None, description="The voice call of this server it matched")
    data: dict[str, Any] = Field(description="The event as Knowlarity sent it")


class RecentEventsResponse(BaseModel):
    configured: bool = Field(description="Whether the konnect stream consumer is configured")
    running: bool
    connected: bool
    events: list[RecentEvent]
