"""The FAQ agent: a table of phrasings (with recognition slips) against the example file."""

from __future__ import annotations

import pytest

from agents import EXAMPLE
from pipeline.agent import TRANSFER_TOOL
from pipeline.agent_file import load_agent_file
from pipeline.faq import FaqMatcher, MatchKind, normalise
from pipeline.providers.base import LLMEvent, TextDelta, ToolCall
from pipeline.providers.faq_agent import FaqAgent

AGENT = load_agent_file(EXAMPLE)
MATCHER = FaqMatcher(AGENT.faq, AGENT.transfer_phrases)

HOURS, ADDRESS, PRICES = "our opening hours", "our address", "our prices"
BOOKING, EMERGENCY = "booking an appointment", "emergencies"


@pytest.mark.parametrize(
    ("said", "topic"),
    [
        ("What time do you open tomorrow?", HOURS),
        ("what time do you open to-morrow", HOURS),  # how Moonshine writes it at times
        ("When are you open?", HOURS),
        ("um are you open on sunday", HOURS),
        ("what are your timings", HOURS),
        ("What time do you close today?", HOURS),
        ("West time, who you open to, Marlow?", HOURS),  # a bad transcript still has "open"
        ("Where are you located?", ADDRESS),
        ("what's the address", ADDRESS),
        ("is there parking near the clinic", ADDRESS),
        ("how much does it cost", PRICES),
        ("How much is a consultation?", PRICES),
        ("what are your fees for a cleaning", PRICES),
        ("I want to book an appointment", BOOKING),
        ("can I get an appointment tomorrow", BOOKING),
        ("I'd like to schedule a visit", BOOKING),
        ("I need to reschedule", BOOKING),
        ("I have a toothache", EMERGENCY),
        ("my tooth is broken and it's bleeding", EMERGENCY),
    ],
)
def test_questions_find_their_answer(said: str, topic: str) -> None:
    match = MATCHER.match(said)
    assert match.kind is MatchKind.ANSWER, f"{said!r} -> {match}"
    assert match.entry is not None and match.entry.topic == topic


@pytest.mark.parametrize(
    "said",
    [
        "Can I talk to a human please?",
        "can I talk to human please",
        "I'd like to talk to some one at the front desk.",
        "let me speak to a person",
        "Put me through to the receptionist.",
        "operator",
        "I want to speak to someone about booking",  # a person wins over the FAQ
    ],
)
def test_requests_for_a_person_transfer(said: str) -> None:
    assert MATCHER.match(said).kind is MatchKind.TRANSFER


@pytest.mark.parametrize(
    ("said", "kind"),
    [
        ("hello", MatchKind.NONE),
        ("what's the weather like", MatchKind.NONE),
        ("do you sell shoes", MatchKind.NONE),
        ("Can I talk to you, and please?", MatchKind.NONE),
        ("", MatchKind.NONE),
        ("thank you", MatchKind.CLOSING),
        ("thanks, bye", MatchKind.CLOSING),
        ("no that's all thank you", MatchKind.CLOSING),
    ],
)
def test_everything_else(said: str, kind: MatchKind) -> None:
    assert MATCHER.match(said).kind is kind


def test_normalise() -> None:
    assert normalise("What's UP?  Dr. Rao's 9.30 slot!") == [
        "what's",
        "up",
        "dr",
        "rao's",
        "9",
        "30",
        "slot",
    ]


async def reply(agent: FaqAgent, said: str, *, transfer_tool: bool = True) -> list[LLMEvent]:
    messages = [
        {"role": "system", "content": "ignored"},
        {"role": "user", "content": "an earlier question"},
        {"role": "assistant", "content": "an earlier answer"},
        {"role": "user", "content": said},
    ]
    tools = (TRANSFER_TOOL,) if transfer_tool else ()
    return [event async for event in agent.stream(messages, tools)]


async def test_the_agent_answers_from_the_file_only() -> None:
    agent = FaqAgent(AGENT)
    (answer,) = await reply(agent, "where are you located")
    assert isinstance(answer, TextDelta)
    assert answer.text == next(e.answer for e in AGENT.faq if e.topic == ADDRESS)
    (offer,) = await reply(agent, "do you sell shoes")
    assert isinstance(offer, TextDelta)
    assert offer.text == (
        "I can help with our opening hours, our address, our prices, booking an appointment "
        "and emergencies, or put you through to our front desk. What would you like to know?"
    )
    (bye,) = await reply(agent, "thank you, bye")
    assert isinstance(bye, TextDelta) and bye.text == AGENT.goodbye_line


async def test_a_transfer_is_the_tool_call_the_session_knows() -> None:
    agent = FaqAgent(AGENT)
    (call,) = await reply(agent, "can I talk to a human")
    assert isinstance(call, ToolCall) and call.name == TRANSFER_TOOL.name
    # No transfer number configured, so no tool offered: say so, and offer the topics.
    (text,) = await reply(agent, "can I talk to a human", transfer_tool=False)
    assert isinstance(text, TextDelta)
    assert text.text.startswith("I'm sorry, there is no one") and "opening hours" in text.text
