"""Settings groups keep every environment name, and the provider choice per stage."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from config.settings import ENV_NAMES, Settings
from pipeline.agent import AgentConfig
from pipeline.language import call_languages
from pipeline.providers.cartesia_tts import CartesiaTTS
from pipeline.providers.cartesia_ws import CartesiaWebSocketTTS
from server.providers import (
    LOCAL_PROVIDERS,
    build_providers,
    choose,
    missing,
    providers_for_language,
)

ROOT = Path(__file__).resolve().parent.parent
KEYS: dict[str, Any] = {  # placeholders, but long enough to count as keys (8+ characters)
    "deepgram_api_key": "dg-key-0001",
    "openai_api_key": "oa-key-0001",
    "cartesia_api_key": "ca-key-0001",
    "cartesia_voice_id": "voice",
}


def test_every_documented_variable_has_a_home_in_a_group() -> None:
    documented = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.M))
    assert {name.lower() for name in documented} == set(ENV_NAMES)


def test_flat_environment_names_fill_the_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPGRAM_ENDPOINTING_MS", "450")
    monkeypatch.setenv("MAX_CALLS", "7")
    monkeypatch.setenv("ADMIN_API_TOKEN", "admin-token-for-tests")
    monkeypatch.setenv("VOICE_ALLOWED_IPS", "10.0.0.0/8, 127.0.0.1")
    monkeypatch.setenv("TTS_PROVIDER", "Local")
    settings = Settings(_env_file=None, greeting="Namaste.")  # arguments beat the environment
    assert settings.deepgram.endpointing_ms == 450
    assert settings.stream.max_calls == 7
    assert settings.stream.voice_allowed_ips == ("10.0.0.0/8", "127.0.0.1")
    assert settings.knowlarity.admin_api_token is not None
    assert settings.agent.greeting == "Namaste."
    assert settings.providers.tts == "local"
    with pytest.raises(ValidationError):
        settings.stream.max_calls = 8  # type: ignore[misc]  # frozen


def test_a_dotenv_file_is_read_and_bad_values_name_their_group(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("OPENAI_FALLBACK_BASE_URL=http://backup/v1\nOPENAI_MODEL=m1\nSAMPLE_RATE=8000\n")
    settings = Settings(_env_file=env)
    fallback = settings.openai.fallback()
    assert fallback is not None and (fallback.base_url, fallback.model) == (
        "http://backup/v1",
        "m1",
    )
    assert settings.stream.sample_rate == 8000
    with pytest.raises(ValidationError, match=r"stream\.sample_rate"):
        Settings(_env_file=None, sample_rate=11025)


def test_auto_takes_the_cloud_provider_when_its_keys_are_set() -> None:
    choices = choose(Settings(_env_file=None, **KEYS), local=frozenset())
    assert {s: c.provider for s, c in choices.items()} == {
        "stt": "deepgram",
        "llm": "openai",
        "tts": "cartesia",
    }
    assert missing(choices) == []


def test_auto_falls_back_to_local_per_stage_and_says_why() -> None:
    settings = Settings(_env_file=None, openai_api_key="oa-key-0001")
    choices = choose(settings, local=frozenset({"stt", "tts"}))
    assert {s: c.provider for s, c in choices.items()} == {
        "stt": "local",
        "llm": "openai",
        "tts": "local",
    }
    assert "DEEPGRAM_API_KEY" in choices["stt"].reason


def test_an_explicit_choice_is_kept_even_when_it_cannot_run() -> None:
    settings = Settings(_env_file=None, stt_provider="local", llm_provider="openai", **KEYS)
    choices = choose(settings, local=frozenset())
    assert choices["stt"].provider is None
    assert "STT_PROVIDER=local" in choices["stt"].reason and ".[local]" in choices["stt"].reason
    assert choices["llm"].provider == "openai"
    no_key = choose(Settings(_env_file=None, tts_provider="cartesia"), local=frozenset({"tts"}))
    assert no_key["tts"].provider is None  # named outright: no silent switch to local
    assert missing(no_key) == [
        "DEEPGRAM_API_KEY",
        "OPENAI_API_KEY",
        "CARTESIA_API_KEY",
        "CARTESIA_VOICE_ID",
    ]


def test_no_local_provider_is_registered_in_a_cloud_only_build() -> None:
    # The keyless mode registers its builders; until then `local` names nothing.
    assert set(LOCAL_PROVIDERS) <= {"stt", "llm", "tts"}
    choices = choose(Settings(_env_file=None))
    assert all(c.provider in (None, "local") for c in choices.values())


async def test_cartesia_speaks_over_the_websocket_unless_sse_is_asked_for() -> None:
    example = (ROOT / ".env.example").read_text()
    assert re.search(r"^CARTESIA_TRANSPORT=websocket$", example, re.M)  # documented default
    async with httpx.AsyncClient() as http:
        default = Settings(_env_file=None, **KEYS)
        assert default.cartesia.transport == "websocket"
        base = build_providers(default, http)
        assert isinstance(base.tts, CartesiaWebSocketTTS)
        hindi = call_languages(default, AgentConfig.from_settings(default.agent))["hi"]
        other = providers_for_language(default, http, choose(default), base, hindi).tts
        assert isinstance(other, CartesiaWebSocketTTS) and other.language == "hi"
        assert other.pool is base.tts.pool  # one socket per process, for every voice
        await base.aclose()
        sse = build_providers(Settings(_env_file=None, cartesia_transport=" SSE ", **KEYS), http)
        assert isinstance(sse.tts, CartesiaTTS)
        await sse.aclose()
    with pytest.raises(ValidationError, match="cartesia"):
        Settings(_env_file=None, cartesia_transport="grpc", **KEYS)
