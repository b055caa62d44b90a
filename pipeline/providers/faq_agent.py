"""The keyless agent: a deterministic FAQ answerer behind the ``LanguageModel`` interface.

For simple IVR lines (hours, address, prices, booking, a person) an LLM is not needed:
this agent answers from the agent file's FAQ (:mod:`pipeline.faq` does the matching),
offers the list of topics when nothing matches, and asks for a transfer with the same
``transfer_to_agent`` tool call an LLM would make, so the session hands the caller over
(hand-off line, then Knowlarity ``transfer``) exactly as on the cloud path. It never
invents anything: every word it says is in the agent file.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from config.logs import get_logger
from pipeline.agent import TRANSFER_TOOL
from pipeline.agent_file import AgentFile
from pipeline.faq import FaqMatcher, MatchKind
from pipeline.providers.base import LLMEvent, Message, TextDelta, ToolCall, ToolSpec

log = get_logger("FAQ")

NO_TRANSFER_LINE = "I'm sorry, there is no one I can put you through to right now."
DEFAULT_CLOSING_LINE = "You're welcome. Thank you for calling!"


class FaqAgent:
    name = "local"

    def __init__(self, agent: AgentFile, threshold: float = 70.0) -> None:
        self._agent = agent
        self._matcher = FaqMatcher(agent.faq, agent.transfer_phrases, threshold)
        topics = [entry.topic for entry in agent.faq]
        self.no_match_line = agent.no_match_line.replace("{topics}", _spoken_list(topics))

    async def aclose(self) -> None:
        return None  # nothing held: the matcher is plain data

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> AsyncIterator[LLMEvent]:
        text = _last_user_text(messages)
        match = self._matcher.match(text)
        if match.kind is MatchKind.TRANSFER:
            if any(tool.name == TRANSFER_TOOL.name for tool in tools):
                log.info('Transfer requested | heard="%s"', text)
                yield ToolCall(TRANSFER_TOOL.name, "{}", "faq-transfer")
                return
            reply = f"{NO_TRANSFER_LINE} {self.no_match_line}"
        elif match.kind is MatchKind.ANSWER:
            assert match.entry is not None
            log.info('Answer "%s" (score %.0f) | heard="%s"', match.entry.topic, match.score, text)
            reply = match.entry.answer
        elif match.kind is MatchKind.CLOSING:
            reply = self._agent.goodbye_line or DEFAULT_CLOSING_LINE
        else:
            log.info('No FAQ match (best %.0f) | heard="%s"', match.score, text)
            reply = self.no_match_line
        yield TextDelta(reply)


def _last_user_text(messages: Sequence[Message]) -> str:
    for message in reversed(messages):
        content = message.get("content")
        if message.get("role") == "user" and isinstance(content, str):
            return content
    return ""


def _spoken_list(items: Sequence[str]) -> str:
    """ "a", "a and b", "a, b and c" """
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]
