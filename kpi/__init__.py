"""Knowlarity account API adapter: outbound calls, OTP calls, notification registrations
and the live konnect call-event stream, as a client, a CLI (``voice-agent kpi``) and
admin HTTP routes (``/api/...``)."""

from kpi.client import KnowlarityClient, KpiConfig
from kpi.errors import ConfigError, InputError, KnowlarityError, KnowlarityTransportError
from kpi.models import CdrEvent, KonnectEvent, TelephonyEvent, UnknownEvent

__all__ = [
    "CdrEvent",
    "ConfigError",
    "InputError",
    "KnowlarityClient",
    "KnowlarityError",
    "KnowlarityTransportError",
    "KonnectEvent",
    "KpiConfig",
    "TelephonyEvent",
    "UnknownEvent",
]
