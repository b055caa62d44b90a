"""Which provider serves each stage (STT, LLM, TTS): cloud, local, or none (pure).

``STT_PROVIDER`` / ``LLM_PROVIDER`` / ``TTS_PROVIDER``:

- ``auto`` (default): the cloud provider when its key is set, else the local one when the
  ``local`` extra is installed, else none;
- the cloud name (``deepgram`` / ``openai`` / ``cartesia``): that provider, or none if its
  key is missing (no silent fallback: the operator asked for it);
- ``local``: the local provider, or none if the extra is not installed.

A stage with no provider cannot run a call: ``/ready`` says so and callers hear the
unavailable line (when any TTS is there to say it). The choice is logged once at start-up
and shown on ``/health``; it never contains a key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from config.settings import Settings

Stage = Literal["stt", "llm", "tts"]
STAGES: tuple[Stage, ...] = ("stt", "llm", "tts")
CLOUD = {"stt": "deepgram", "llm": "openai", "tts": "cartesia"}
LOCAL_EXTRA_HINT = 'install the local extra: .venv/bin/pip install -e ".[local]"'


@dataclass(frozen=True, slots=True)
class StageChoice:
    stage: Stage
    provider: str | None  # "deepgram" / "openai" / "cartesia" / "local", or None
    why: str  # one line for the start-up log and /health
    missing: tuple[str, ...] = ()  # settings that would make the cloud provider work


@dataclass(frozen=True, slots=True)
class ProviderChoice:
    stt: StageChoice
    llm: StageChoice
    tts: StageChoice

    @property
    def stages(self) -> tuple[StageChoice, StageChoice, StageChoice]:
        return (self.stt, self.llm, self.tts)

    @property
    def uses_local(self) -> bool:
        return any(choice.provider == "local" for choice in self.stages)

    def unavailable(self) -> list[StageChoice]:
        return [choice for choice in self.stages if choice.provider is None]

    def missing_settings(self) -> list[str]:
        return [name for choice in self.unavailable() for name in choice.missing]

    def summary(self) -> str:
        return ", ".join(f"{c.stage.upper()}={c.provider or 'NONE'}" for c in self.stages)


def choose_providers(settings: Settings, local_installed: dict[Stage, bool]) -> ProviderChoice:
    """``local_installed``: whether each stage's local provider can be imported."""
    missing = settings.missing_providers()
    cloud_missing = {
        stage: tuple(name for name in missing if name.startswith(CLOUD[stage].upper()))
        for stage in STAGES
    }
    wanted: dict[Stage, str] = {
        "stt": settings.stt_provider,
        "llm": settings.llm_provider,
        "tts": settings.tts_provider,
    }
    picks = {
        stage: choose_stage(stage, wanted[stage], cloud_missing[stage], local_installed[stage])
        for stage in STAGES
    }
    return ProviderChoice(stt=picks["stt"], llm=picks["llm"], tts=picks["tts"])


def choose_stage(
    stage: Stage, wanted: str, cloud_missing: tuple[str, ...], local_installed: bool
) -> StageChoice:
    cloud = CLOUD[stage]
    setting = f"{stage.upper()}_PROVIDER"
    keys = " and ".join(cloud_missing)
    if wanted == "local":
        if local_installed:
            return StageChoice(stage, "local", f"{setting}=local")
        return StageChoice(
            stage, None, f"{setting}=local but it is not installed: {LOCAL_EXTRA_HINT}"
        )
    if wanted == cloud:
        if not cloud_missing:
            return StageChoice(stage, cloud, f"{setting}={cloud}")
        return StageChoice(stage, None, f"{setting}={cloud} but {keys} is not set", cloud_missing)
    if not cloud_missing:
        return StageChoice(stage, cloud, f"auto: {cloud} (its key is set)")
    if local_installed:
        return StageChoice(stage, "local", f"auto: local ({keys} not set)")
    return StageChoice(
        stage,
        None,
        f"auto: no {cloud} ({keys} not set) and no local model; {LOCAL_EXTRA_HINT}",
        cloud_missing,
    )
