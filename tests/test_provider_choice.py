"""Which provider serves each stage, for every setting (pure)."""

from __future__ import annotations

import pytest

from server.provider_choice import LOCAL_EXTRA_HINT, Stage, choose_providers, choose_stage
from tests.conftest import make_settings

KEYS = {
    "DEEPGRAM_API_KEY": "dg-key",
    "OPENAI_API_KEY": "oa-key",
    "CARTESIA_API_KEY": "ca-key",
    "CARTESIA_VOICE_ID": "voice-1",
}
ALL_LOCAL: dict[Stage, bool] = {"stt": True, "llm": True, "tts": True}
NO_LOCAL: dict[Stage, bool] = {"stt": False, "llm": False, "tts": False}


@pytest.mark.parametrize(
    ("wanted", "missing", "installed", "provider"),
    [
        ("auto", (), True, "deepgram"),  # a key beats the local model
        ("auto", ("DEEPGRAM_API_KEY",), True, "local"),
        ("auto", ("DEEPGRAM_API_KEY",), False, None),
        ("deepgram", (), False, "deepgram"),
        ("deepgram", ("DEEPGRAM_API_KEY",), True, None),  # asked for it: no silent fallback
        ("local", (), True, "local"),  # asked for local even with a key
        ("local", (), False, None),
    ],
)
def test_stage_choice(
    wanted: str, missing: tuple[str, ...], installed: bool, provider: str | None
) -> None:
    choice = choose_stage("stt", wanted, missing, installed)
    assert choice.provider == provider
    if provider is None:
        assert "DEEPGRAM_API_KEY" in choice.why or LOCAL_EXTRA_HINT in choice.why


def test_no_keys_at_all_runs_everything_locally() -> None:
    choice = choose_providers(make_settings({}), ALL_LOCAL)
    assert [c.provider for c in choice.stages] == ["local", "local", "local"]
    assert choice.uses_local and not choice.unavailable() and choice.missing_settings() == []
    assert choice.summary() == "STT=local, LLM=local, TTS=local"


def test_no_keys_and_no_local_extra_says_what_to_do() -> None:
    choice = choose_providers(make_settings({}), NO_LOCAL)
    assert [c.stage for c in choice.unavailable()] == ["stt", "llm", "tts"]
    assert choice.missing_settings() == [
        "DEEPGRAM_API_KEY",
        "OPENAI_API_KEY",
        "CARTESIA_API_KEY",
        "CARTESIA_VOICE_ID",
    ]
    assert all(LOCAL_EXTRA_HINT in c.why for c in choice.unavailable())


def test_mixed_setup_local_stt_with_cloud_llm_and_tts() -> None:
    env = {**KEYS, "STT_PROVIDER": "local"}
    choice = choose_providers(make_settings(env), ALL_LOCAL)
    assert [c.provider for c in choice.stages] == ["local", "openai", "cartesia"]


def test_a_voice_id_alone_is_not_a_cartesia_setup() -> None:
    env = {"CARTESIA_VOICE_ID": "voice-1", "TTS_PROVIDER": "cartesia"}
    choice = choose_providers(make_settings(env), ALL_LOCAL)
    assert choice.tts.provider is None and choice.tts.missing == ("CARTESIA_API_KEY",)


def test_provider_names_are_case_and_blank_tolerant() -> None:
    settings = make_settings(
        {"STT_PROVIDER": " Local ", "LLM_PROVIDER": "", "TTS_PROVIDER": "AUTO"}
    )
    assert (settings.stt_provider, settings.llm_provider, settings.tts_provider) == (
        "local",
        "auto",
        "auto",
    )
    with pytest.raises(ValueError, match="stt_provider"):
        make_settings({"STT_PROVIDER": "whisper"})
