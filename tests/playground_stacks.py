"""Servers for the browser tests, by the providers behind them.

Each browser scenario takes ``start_stack`` and runs unchanged on every stack listed in
``STACKS``: ``fakes`` is the project's protocol-faithful provider fakes (the fake STT
takes its words from a script, one transcript per utterance it hears).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from server.application import create_app
from testkit import AppServer, FakeProviders, llm
from tests.conftest import VoiceServer, make_settings

STACKS = ["fakes"]


@dataclass
class Stack:
    """A running server, and how to script (or expect) what its providers hear and say."""

    name: str
    server: VoiceServer
    fakes: FakeProviders | None = None

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
        """Whether the STT's transcript ``heard`` is the fixture's words ``said``."""
        return _words(heard) == _words(said)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


@contextlib.asynccontextmanager
async def open_stack(name: str, **overrides: Any) -> AsyncIterator[Stack]:
    if name != "fakes":
        raise ValueError(f"unknown stack {name!r}")
    async with FakeProviders() as fakes:
        app = create_app(make_settings(fakes.env(), **overrides))
        server = AppServer(app, lifespan="on", ws="websockets-sansio")
        await server.start()
        try:
            voice = VoiceServer(app, server)
            await asyncio.wait_for(voice.state.greeting_warmed.wait(), 30)
            yield Stack(name, voice, fakes)
        finally:
            await server.stop()
