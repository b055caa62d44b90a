"""What the agent says and how it behaves, independent of any provider."""

from __future__ import annotations

from dataclasses import dataclass

from config.settings import AgentSettings
from pipeline.providers.base import ToolSpec

TRANSFER_TOOL = ToolSpec(
    name="transfer_to_agent",
    description=(
        "Transfer the caller to a human agent. Use it when the caller asks for a person, "
        "or when you cannot help them."
    ),
)


@dataclass(frozen=True, slots=True)
class AgentConfig:
    greeting: str
    system_prompt: str
    transfer_number: str | None = None
    transfer_line: str = "Sure, transferring you to a colleague now."
    fallback_line: str = "Sorry, I didn't catch that, could you say it again?"
    unavailable_line: str = (
        "Sorry, our assistant is not available right now. Please call again later."
    )
    goodbye_line: str = "Thank you for calling. Goodbye!"
    barge_in_min_words: int = 1
    turn_deadline_s: float = 2.5  # retries stop here; the fallback line plays instead
    max_failed_turns: int = 3  # consecutive fallback lines before goodbye and hand-off
    max_history_messages: int = 40
    silence_timeout_s: float = 30.0  # caller silent this long (bot quiet too): goodbye
    max_call_s: float = 3600.0
    first_clause_chars: int = 0  # send the reply's first clause early (0 = off)

    @classmethod
    def from_settings(cls, settings: AgentSettings) -> AgentConfig:
        return cls(
            greeting=settings.greeting,
            system_prompt=settings.system_prompt,
            transfer_number=settings.transfer_number,
            transfer_line=settings.transfer_line,
            barge_in_min_words=settings.barge_in_min_words,
            goodbye_line=settings.goodbye_line,
            silence_timeout_s=settings.silence_timeout_s,
            max_call_s=settings.max_call_seconds,
            turn_deadline_s=settings.turn_deadline_s,
            max_failed_turns=settings.max_failed_turns,
            first_clause_chars=settings.first_clause_chars,
        )

    @property
    def tools(self) -> tuple[ToolSpec, ...]:
        return (TRANSFER_TOOL,) if self.transfer_number else ()

    def fixed_lines(self) -> list[str]:
        """Lines worth synthesising ahead of time."""
        lines = [self.greeting, self.fallback_line, self.unavailable_line, self.goodbye_line]
        if self.transfer_number:
            lines.append(self.transfer_line)
        return [line for line in lines if line]
