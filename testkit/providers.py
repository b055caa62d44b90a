"""All three fakes together, plus the environment that points the server at them.

    async with FakeProviders() as fakes:
        settings = Settings(**fakes.env())        # or os.environ.update(fakes.env())
        fakes.deepgram.utterances.append("What time do you open tomorrow?")
        fakes.openai.replies.append(llm.Text("We open at nine."))

The OpenAI fake also serves ``GET /_fake/timeline?since=<monotonic>&limit=<n>``: the
recent STT send timelines and LLM/TTS request timings as JSON, for a benchmark running in
another process (``time.monotonic()`` is host-wide on Linux).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ._service import Service
from .fake_cartesia import FakeCartesia
from .fake_deepgram import FakeDeepgram
from .fake_openai import FakeOpenAI

__all__ = ["DEFAULT_KEYS", "TIMELINE_PATH", "FakeProviders"]

TIMELINE_PATH = "/_fake/timeline"
DEFAULT_KEYS = {
    "deepgram": "test-deepgram-key",
    "openai": "test-openai-key",
    "cartesia": "test-cartesia-key",
    "voice_id": "test-voice-id",
}


class FakeProviders(Service):
    """Starts the fakes on loopback ports; pass pre-built fakes to change their options."""

    def __init__(
        self,
        *,
        deepgram: FakeDeepgram | None = None,
        openai: FakeOpenAI | None = None,
        cartesia: FakeCartesia | None = None,
        voice_id: str = DEFAULT_KEYS["voice_id"],
    ) -> None:
        self.deepgram = deepgram or FakeDeepgram(api_key=DEFAULT_KEYS["deepgram"])
        self.openai = openai or FakeOpenAI(api_key=DEFAULT_KEYS["openai"])
        self.cartesia = cartesia or FakeCartesia(api_key=DEFAULT_KEYS["cartesia"])
        self.voice_id = voice_id
        self.openai.add_route(Route(TIMELINE_PATH, self._timeline, methods=["GET"]))
        self._stack: contextlib.AsyncExitStack | None = None

    def env(self) -> dict[str, str]:
        """The settings that point the server (or a benchmark client) at the fakes."""
        return {
            "DEEPGRAM_BASE_URL": self.deepgram.url,
            "DEEPGRAM_API_KEY": self.deepgram.api_key or DEFAULT_KEYS["deepgram"],
            "OPENAI_BASE_URL": self.openai.base_url,
            "OPENAI_API_KEY": self.openai.api_key or DEFAULT_KEYS["openai"],
            "CARTESIA_BASE_URL": self.cartesia.base_url,
            "CARTESIA_API_KEY": self.cartesia.api_key or DEFAULT_KEYS["cartesia"],
            "CARTESIA_VOICE_ID": self.voice_id,
        }

    @property
    def timeline_url(self) -> str:
        return self.openai.base_url.removesuffix("/v1") + TIMELINE_PATH

    def timeline(self, since: float | None = None, limit: int = 100) -> dict[str, Any]:
        return {
            "now": time.monotonic(),
            "stt": self.deepgram.timeline(since, limit),
            "llm": self.openai.timeline(since, limit),
            "tts": self.cartesia.timeline(since, limit),
        }

    async def _timeline(self, request: Request) -> Response:
        try:
            raw_since = request.query_params.get("since")
            since = float(raw_since) if raw_since else None
            limit = int(request.query_params.get("limit", "100"))
        except ValueError:
            return JSONResponse({"error": "since must be a number, limit an integer"}, 400)
        return JSONResponse(self.timeline(since, limit))

    async def start(self) -> None:
        async with contextlib.AsyncExitStack() as stack:
            for fake in (self.deepgram, self.openai, self.cartesia):
                await stack.enter_async_context(fake)
            self._stack = stack.pop_all()

    async def stop(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()
