"""Servers for the browser tests, by the providers behind them.

Each browser scenario takes ``start_stack`` and runs unchanged on every stack listed in
``STACKS``: ``fakes`` is the project's protocol-faithful provider fakes (the fake STT
takes its words from a script, one transcript per utterance it hears); ``local`` is the
keyless stack (real Moonshine STT, the FAQ agent on ``agents/example.yaml``, Piper TTS),
which hears the fixtures' real words and answers from the agent file. A stack also says
how long the caller stays quiet at first, so the greeting plays out before the question.
Both run by default; ``PLAYGROUND_STACKS=fakes`` (or ``local``) runs one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from server.application import create_app
from testkit import AppServer, FakeProviders, llm
from tests.conftest import VoiceServer, make_settings

STACKS = os.environ.get("PLAYGROUND_STACKS", "fakes,local").split(",")
LOCAL = {"stt_provider": "local", "llm_provider": "local", "tts_provider": "local"}
WARM_TIMEOUT_S = 120.0  # the local models load once per process; a shared 2-core box


@dataclass
class Stack:
    """A running server, and how to script (or expect) what its providers hear and say."""

    name: str
    server: VoiceServer
    fakes: FakeProviders | None = None
    greeting_s: float = 3.5  # the caller stays silent this long: the greeting plays out

    def script(self, heard: list[str], replies: list[str]) -> None:
        """What the fake STT hears per utterance and what the fake LLM answers."""
        if self.fakes is not None:
            self.fakes.deepgram.utterances.extend(heard)
            self.fakes.openai.replies.extend(llm.Text(text) for text in replies)

    def script_transfer(self) -> str:
        """Make the next utterance a request for a person; returns the fixture that asks."""
        if self.fakes is not None:
            self.fakes.deepgram.utterances.append("Can I talk to a human please?")
            self.fakes.openai.replies.append(llm.Tool("transfer_to_agent"))
        return "transfer.wav"

    def heard_as(self, said: str, heard: str) -> bool:
        """Whether the STT's transcript ``heard`` is the fixture's words ``said`` (a real
        recogniser may miss a word of synthetic speech, never the sense)."""
        if self.fakes is not None:
            return _words(heard) == _words(said)
        expected = _words(said)
        found = sum(word in _words(heard) for word in expected)
        return found >= len(expected) - 1


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


@contextlib.asynccontextmanager
async def open_stack(name: str, **overrides: Any) -> AsyncIterator[Stack]:
    if name == "fakes":
        async with FakeProviders() as fakes, _serving(fakes.env(), overrides) as voice:
            yield Stack(name, voice, fakes)
    elif name == "local":
        async with _serving({}, {**LOCAL, **overrides}) as voice:
            yield Stack(name, voice, greeting_s=6.0)
    else:
        raise ValueError(f"unknown stack {name!r}")


@contextlib.asynccontextmanager
async def _serving(env: dict[str, str], overrides: dict[str, Any]) -> AsyncIterator[VoiceServer]:
    app = create_app(make_settings(env, **overrides))
    server = AppServer(app, lifespan="on", ws="websockets-sansio")
    await server.start()
    try:
        voice = VoiceServer(app, server)
        state = voice.state
        lines = len(state.agent.fixed_lines()) * 2  # each fixed line at 16 and 8 kHz
        async with asyncio.timeout(WARM_TIMEOUT_S):
            await state.greeting_warmed.wait()
            while len(state.providers.cache) < lines:  # noqa: ASYNC110 (a background warm-up)
                await asyncio.sleep(0.1)
        yield voice
    finally:
        await server.stop()
