"""Real headless Chromium (Debian's ``chromium``) driving the playground, for the tests.

Playwright's async API runs in the test's own event loop, beside the in-process server,
so a test can await the page and inspect the server's state without threads. Playwright's
own browser download is not used: it drives the system Chromium by its path.

The microphone is Chromium's fake capture device reading a WAV built per test
(:func:`mic_wav`): ``--use-file-for-fake-audio-capture=<wav>%noloop`` plays the file once
from the moment the page opens the microphone, then silence. Without ``%noloop`` the file
loops; and a file that does not end in silence keeps repeating its last buffer, so every
file built here ends with digital silence.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright

from audio.wav import pcm_to_wav, read_wav_file
from tests.conftest import FIXTURES

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
MIC_RATE = 16000


def mic_wav(path: Path, *parts: str | float) -> Path:
    """A fake microphone: fixture names (``"question.wav"``) and seconds of silence."""
    pcm = bytearray()
    for part in parts:
        if isinstance(part, str):
            wav = read_wav_file(FIXTURES / part)
            assert wav.sample_rate == MIC_RATE, f"{part} must be {MIC_RATE} Hz"
            pcm += wav.pcm
        else:
            pcm += bytes(2 * int(part * MIC_RATE))
    pcm += bytes(2 * 2 * MIC_RATE)  # the fake device repeats its last buffer at the end
    path.write_bytes(pcm_to_wav(bytes(pcm), MIC_RATE))
    return path


@asynccontextmanager
async def chromium(mic: Path | None = None) -> AsyncIterator[Browser]:
    args = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
    if mic is not None:
        args.append(f"--use-file-for-fake-audio-capture={mic}%noloop")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            yield browser
        finally:
            await browser.close()


class PageProbe:
    """The page plus what it logged: console errors fail the test that asks for them."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.console: list[str] = []
        self.errors: list[str] = []
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))

    def _on_console(self, message: ConsoleMessage) -> None:
        line = f"{message.type}: {message.text}"
        self.console.append(line)
        if message.type == "error":
            self.errors.append(line)

    async def open(self, base_url: str, fragment: str = "") -> None:
        await self.page.goto(f"{base_url}/{fragment}")
        await self.page.wait_for_selector("body[data-ready=true]")

    async def state(self) -> dict[str, Any]:
        value: dict[str, Any] = await self.page.evaluate("window.playground.state()")
        return value

    async def wait_state(
        self,
        check: Callable[[dict[str, Any]], bool],
        what: str,
        timeout_s: float = 15.0,
    ) -> dict[str, Any]:
        """Poll the page's own state until ``check`` holds (the page is real time)."""
        deadline = time.monotonic() + timeout_s
        state: dict[str, Any] = {}
        while time.monotonic() < deadline:
            state = await self.state()
            if state and check(state):
                return state
            await self.page.wait_for_timeout(50)
        raise AssertionError(f"timed out waiting for {what}; page state: {summary(state)}")


def summary(state: dict[str, Any]) -> str:
    """The page state without the bulky parts, for assertion messages."""
    if not state:
        return "no call"
    bulky = ("schedule", "events", "protocol", "levels")
    keep = {k: v for k, v in state.items() if k not in bulky}
    keep["events"] = [e.get("kind") for e in state.get("events", [])]
    keep["protocol"] = [p.get("type") for p in state.get("protocol", [])][-20:]
    return repr(keep)
