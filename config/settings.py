"""Every setting the server reads. The environment variable names are the public contract."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

SUPPORTED_SAMPLE_RATES = (8000, 16000, 24000, 32000, 48000)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    # Server
    host: str = "0.0.0.0"
    port: int = 8000
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # Deepgram live STT
    deepgram_api_key: SecretStr | None = None
    deepgram_base_url: str = "wss://api.deepgram.com"
    deepgram_model: str = "nova-3"
    deepgram_language: str = "en-US"
    deepgram_endpointing_ms: int = Field(300, ge=10, le=10_000)
    deepgram_utterance_end_ms: int = Field(1000, ge=1000, le=5000)
    deepgram_keepalive_s: float = Field(4.0, gt=0, le=9.0)

    # OpenAI-compatible chat completions
    openai_api_key: SecretStr | None = None
    openai_base_url: str = "https://api.openai.com/v1"
    openai_model: str = "gpt-4o-mini"
    openai_temperature: float = 0.6
    openai_max_tokens: int = 300

    # Cartesia TTS over SSE
    cartesia_api_key: SecretStr | None = None
    cartesia_voice_id: str | None = None
    cartesia_base_url: str = "https://api.cartesia.ai"
    cartesia_model: str = "sonic-3"
    cartesia_version: str = "2025-04-16"
    cartesia_language: str = "en"

    # The agent
    greeting: str = "Hello! How can I help you today?"
    system_prompt: str = (
        "You are a helpful voice assistant on a phone call. Keep responses short and "
        "conversational: one or two sentences, no lists, no markdown."
    )
    transfer_number: str | None = None
    transfer_line: str = "Sure, transferring you to a colleague now."
    audio_chunk_ms: int = Field(100, ge=20, le=1000)
    sample_rate: int = 16000
    barge_in_min_words: int = Field(1, ge=1, le=10)
    goodbye_line: str = "Thank you for calling. Goodbye!"
    silence_timeout_s: float = Field(30.0, gt=0)
    max_call_seconds: float = Field(3600.0, gt=0)
    greeting_cache_size: int = Field(64, ge=1, le=10_000)

    @field_validator("sample_rate")
    @classmethod
    def _known_rate(cls, value: int) -> int:
        if value not in SUPPORTED_SAMPLE_RATES:
            raise ValueError(f"SAMPLE_RATE must be one of {SUPPORTED_SAMPLE_RATES}, got {value}")
        return value

    @field_validator("transfer_number", "cartesia_voice_id", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def stt_configured(self) -> bool:
        return _present(self.deepgram_api_key)

    @property
    def llm_configured(self) -> bool:
        return _present(self.openai_api_key)

    @property
    def tts_configured(self) -> bool:
        return _present(self.cartesia_api_key) and bool(self.cartesia_voice_id)

    def missing_providers(self) -> list[str]:
        """Names of the settings a live call still needs, for a clear log line."""
        missing = []
        if not self.stt_configured:
            missing.append("DEEPGRAM_API_KEY")
        if not self.llm_configured:
            missing.append("OPENAI_API_KEY")
        if not _present(self.cartesia_api_key):
            missing.append("CARTESIA_API_KEY")
        if not self.cartesia_voice_id:
            missing.append("CARTESIA_VOICE_ID")
        return missing

    def secrets(self) -> list[str]:
        """Every configured secret value, so log redaction can mask them."""
        values = [
            self.deepgram_api_key,
            self.openai_api_key,
            self.cartesia_api_key,
            self.knowlarity_api_key,
            self.knowlarity_sr_api_key,
            self.admin_api_token,
            self.voice_ws_token,
            self.openai_fallback_api_key,
        ]
        return [v.get_secret_value() for v in values if v is not None and _present(v)]

    # Knowlarity account API (kpi/) ------------------------------------------------------
    # REST calls (makecall, otpcall, notifications) send KNOWLARITY_API_KEY as x-api-key and
    # KNOWLARITY_SR_API_KEY as authorization; the live konnect stream has the SR key in its URL.
    knowlarity_api_key: SecretStr | None = None
    knowlarity_sr_api_key: SecretStr | None = None
    knowlarity_base_url: str = "https://kpi.knowlarity.com"
    knowlarity_channel: Literal["Basic", "Advance", "Premium", "Enterprise"] = "Basic"
    knowlarity_number: str | None = None  # default k_number / knowlarity_number (E.164)
    knowlarity_agent_number: str | None = None  # default agent_number for makecall (E.164)
    knowlarity_notifications_url: str = "https://konnect.knowlarity.com:8100"
    knowlarity_events_enabled: bool = True  # run the konnect consumer when the SR key is set
    knowlarity_timeout_s: float = Field(15.0, gt=0, le=300)
    knowlarity_connect_timeout_s: float = Field(5.0, gt=0, le=60)
    knowlarity_retries: int = Field(2, ge=0, le=10)
    knowlarity_retry_backoff_s: float = Field(0.5, ge=0, le=30)
    knowlarity_stream_idle_timeout_s: float = Field(300.0, gt=0, le=86_400)
    knowlarity_stream_backoff_initial_s: float = Field(1.0, gt=0, le=600)
    knowlarity_stream_backoff_max_s: float = Field(60.0, gt=0, le=3600)
    knowlarity_events_buffer: int = Field(500, ge=1, le=100_000)
    admin_api_token: SecretStr | None = None  # Bearer token for the /api routes

    @field_validator("knowlarity_channel", mode="before")
    @classmethod
    def _channel_any_case(cls, value: object) -> object:
        if isinstance(value, str):
            for channel in ("Basic", "Advance", "Premium", "Enterprise"):
                if value.strip().lower() == channel.lower():
                    return channel
        return value

    @field_validator("knowlarity_number", "knowlarity_agent_number", mode="before")
    @classmethod
    def _kpi_blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("knowlarity_base_url", "knowlarity_notifications_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.strip().rstrip("/")

    @property
    def kpi_configured(self) -> bool:
        """Both keys the KPI REST API needs are set."""
        return _present(self.knowlarity_api_key) and _present(self.knowlarity_sr_api_key)

    @property
    def konnect_configured(self) -> bool:
        """The live event stream can run (it needs only the SR key) and is wanted."""
        return self.knowlarity_events_enabled and _present(self.knowlarity_sr_api_key)

    @property
    def admin_api_configured(self) -> bool:
        return _present(self.admin_api_token)

    # End of Knowlarity account API (kpi/) -----------------------------------------------

    # Provider timeouts and failover ----------------------------------------------------
    # Every network call has a connect limit, a first-result limit and an idle-gap limit;
    # each expiry is a retryable ProviderTimeout, retried only inside TURN_DEADLINE_S.
    deepgram_connect_timeout_s: float = Field(3.0, gt=0, le=60)
    deepgram_stall_timeout_s: float = Field(1.5, gt=0, le=60)
    deepgram_max_outage_s: float = Field(10.0, gt=0, le=600)
    openai_connect_timeout_s: float = Field(2.0, gt=0, le=60)
    openai_first_token_timeout_s: float = Field(1.5, gt=0, le=60)
    openai_idle_timeout_s: float = Field(3.0, gt=0, le=60)
    cartesia_connect_timeout_s: float = Field(2.0, gt=0, le=60)
    cartesia_first_audio_timeout_s: float = Field(1.0, gt=0, le=60)
    cartesia_idle_timeout_s: float = Field(2.0, gt=0, le=60)
    turn_deadline_s: float = Field(2.5, gt=0, le=30)
    max_failed_turns: int = Field(3, ge=1, le=100)
    openai_fallback_base_url: str | None = None
    openai_fallback_model: str | None = None
    openai_fallback_api_key: SecretStr | None = None

    @field_validator("openai_fallback_base_url", "openai_fallback_model", mode="before")
    @classmethod
    def _fallback_blank_is_none(cls, value: object) -> object:
        return (value.strip() or None) if isinstance(value, str) else value

    @property
    def llm_failover_configured(self) -> bool:
        return self.openai_fallback_base_url is not None

    def openai_fallback_key(self) -> str:
        """OPENAI_FALLBACK_API_KEY, else OPENAI_API_KEY (one account, another endpoint)."""
        key = self.openai_fallback_api_key
        if not _present(key):
            key = self.openai_api_key
        return key.get_secret_value() if key is not None else ""

    # End of provider timeouts and failover ---------------------------------------------

    # Stream security, limits and lifecycle (server/security.py, server/lifecycle.py) -------
    # The Stream Node can only be given a wss-url, so the shared secret travels in it:
    # wss://host/voice/<VOICE_WS_TOKEN> (or /voice?token=...). Unset: /voice is open.
    voice_ws_token: SecretStr | None = None
    # CIDRs allowed to open /voice (empty: any). X-Forwarded-For is believed only when the
    # connection comes from one of TRUSTED_PROXIES (e.g. 127.0.0.1/32 for a local ngrok).
    voice_allowed_ips: Annotated[tuple[str, ...], NoDecode] = ()
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = ()
    max_calls: int = Field(200, ge=1, le=100_000)  # concurrent /voice connections
    max_frame_bytes: int = Field(1_048_576, ge=1024, le=64 * 1_048_576)  # one WS message
    max_metadata_bytes: int = Field(8192, ge=256, le=1_048_576)
    drain_seconds: float = Field(30.0, ge=0, le=3600)  # SIGTERM: let calls finish this long

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
    def voice_auth_configured(self) -> bool:
        return _present(self.voice_ws_token)

    # End of stream security, limits and lifecycle ------------------------------------------

    # Keyless local mode: provider choice, agent file, local models ---------------------------
    # Per stage: auto (cloud when its key is set, else local if installed), the cloud name, or
    # local. See server/provider_choice.py.
    stt_provider: Literal["auto", "deepgram", "local"] = "auto"
    llm_provider: Literal["auto", "openai", "local"] = "auto"
    tts_provider: Literal["auto", "cartesia", "local"] = "auto"
    agent_file: Path | None = None  # YAML agent file (agents/example.yaml documents it)
    vad_threshold: float = Field(0.5, gt=0.15, lt=1)  # silero speech probability
    vad_start_ms: int = Field(160, ge=32, le=2000)  # speech this long starts an utterance
    vad_end_ms: int = Field(500, ge=96, le=5000)  # silence this long ends it
    local_stt_interim_ms: int = Field(600, ge=0, le=10_000)  # early transcript (0: none)
    local_stt_max_utterance_s: float = Field(15.0, ge=1, le=60)
    local_stt_workers: int = Field(1, ge=1, le=16)  # transcriptions at once per process
    local_tts_workers: int = Field(1, ge=1, le=16)  # sentences rendered at once per process
    local_tts_voice: Path | None = None  # a Piper .onnx voice; unset: bundled en_US-joe-medium

    @field_validator("stt_provider", "llm_provider", "tts_provider", mode="before")
    @classmethod
    def _provider_name(cls, value: object) -> object:
        return (value.strip().lower() or "auto") if isinstance(value, str) else value

    @field_validator("agent_file", "local_tts_voice", mode="before")
    @classmethod
    def _blank_path_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    # End of keyless local mode -----------------------------------------------------------


def _present(value: SecretStr | None) -> bool:
    return value is not None and bool(value.get_secret_value().strip())


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
