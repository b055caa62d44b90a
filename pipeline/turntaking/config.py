"""Every turn-taking threshold in one frozen value, with the defaults the README documents."""

from __future__ import annotations

from dataclasses import dataclass, field

from audio.speech_segmenter import SegmenterSettings
from config.settings import TurnTakingSettings
from pipeline.turntaking.barge_in import BargeInConfig
from pipeline.turntaking.preemptive import PreemptiveConfig
from pipeline.turntaking.words import DEFAULT_BACKCHANNELS, BackchannelClassifier

__all__ = ["TurnTakingConfig"]


@dataclass(frozen=True, slots=True)
class TurnTakingConfig:
    barge_in: BargeInConfig = field(default_factory=BargeInConfig)
    preemptive: PreemptiveConfig = field(default_factory=PreemptiveConfig)
    backchannels: tuple[str, ...] = DEFAULT_BACKCHANNELS
    backchannel_max_words: int = 4
    backchannel_hold_s: float = 4.0  # a held "okay" becomes a turn after this (0: never)
    playout_lead_ms: int = 400  # audio queued at the line at most
    playout_start_ms: int = 200  # the first frame to a dry line carries at least this
    # The local VAD's timing for barge-in (quicker than the keyless STT's segmenter).
    vad: SegmenterSettings = field(
        default_factory=lambda: SegmenterSettings(start_ms=96, end_ms=256)
    )

    def __post_init__(self) -> None:
        if not 100 <= self.playout_lead_ms <= 5000:
            raise ValueError(f"playout_lead_ms must be in [100, 5000], got {self.playout_lead_ms}")
        if not 0 <= self.playout_start_ms <= self.playout_lead_ms:
            raise ValueError(
                f"playout_start_ms must be in [0, playout_lead_ms], got {self.playout_start_ms}"
            )
        if self.backchannel_hold_s < 0:
            raise ValueError(f"backchannel_hold_s must be >= 0, got {self.backchannel_hold_s}")

    @classmethod
    def default(cls, min_content_words: int = 1) -> TurnTakingConfig:
        return cls(barge_in=BargeInConfig(min_content_words=min_content_words))

    @classmethod
    def from_settings(
        cls,
        settings: TurnTakingSettings,
        *,
        min_content_words: int = 1,
        vad_threshold: float = 0.5,
    ) -> TurnTakingConfig:
        return cls(
            barge_in=BargeInConfig(
                window_ms=settings.barge_in_window_ms,
                max_backchannel_ms=max(
                    settings.barge_in_max_backchannel_ms, settings.barge_in_window_ms
                ),
                min_content_words=min_content_words,
            ),
            preemptive=PreemptiveConfig(
                enabled=settings.preemptive_reply, quiet_ms=settings.preemptive_quiet_ms
            ),
            backchannels=settings.phrases or DEFAULT_BACKCHANNELS,
            backchannel_max_words=settings.backchannel_max_words,
            backchannel_hold_s=settings.backchannel_hold_s,
            playout_lead_ms=settings.playout_lead_ms,
            playout_start_ms=min(settings.playout_start_ms, settings.playout_lead_ms),
            vad=SegmenterSettings(
                threshold=vad_threshold,
                hysteresis=min(0.15, vad_threshold / 2),
                start_ms=settings.vad_start_ms,
                end_ms=settings.vad_end_ms,
                max_utterance_ms=max(60_000, settings.vad_start_ms),
            ),
        )

    def classifier(self) -> BackchannelClassifier:
        return BackchannelClassifier(self.backchannels, max_words=self.backchannel_max_words)
