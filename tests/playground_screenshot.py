"""Screenshot of the playground mid-call, for the README.

    .venv/bin/python -m tests.playground_screenshot docs/playground.png [--width 1280]

Runs the provider fakes and the server in-process, opens the page in headless Chromium
with a fake microphone (question, then an interruption over the reply), and captures the
page while the agent's second reply plays.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from server.application import create_app
from testkit import AppServer, FakeProviders, llm
from tests.browser import PageProbe, chromium, mic_wav
from tests.conftest import VoiceServer, make_settings

REPLY = (
    "We open at nine in the morning and close at six in the evening. "
    "On Saturdays we open at ten and close at two in the afternoon."
)


async def capture(out: Path, width: int, height: int) -> None:
    async with FakeProviders() as fakes:
        fakes.deepgram.utterances.extend(["What time do you open tomorrow?", "Wait, stop."])
        fakes.openai.replies.extend(
            [llm.Text(REPLY), llm.Text("Of course. What would you like to know?")]
        )
        app = create_app(make_settings(fakes.env()))
        server = AppServer(app, lifespan="on", ws="websockets-sansio")
        await server.start()
        try:
            voice = VoiceServer(app, server)
            await asyncio.wait_for(voice.state.greeting_warmed.wait(), 10)
            with tempfile.TemporaryDirectory() as tmp:
                mic = mic_wav(Path(tmp) / "mic.wav", 3.5, "question.wav", 4.0, "stop.wav", 8.0)
                async with chromium(mic) as browser:
                    page = await browser.new_page(viewport={"width": width, "height": height})
                    probe = PageProbe(page)
                    await probe.open(voice.http_url)
                    await page.click("#call")
                    await probe.wait_state(
                        lambda s: (
                            any(e["kind"] == "agent_speech" and e["turn"] == 2 for e in s["events"])
                            and s["phase"] == "live"
                        ),
                        "the second reply",
                        timeout_s=30,
                    )
                    await page.wait_for_timeout(400)  # meters mid-sentence
                    await page.screenshot(path=str(out), full_page=True)
                    await page.click("#hangup")
        finally:
            await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=900)
    args = parser.parse_args()
    asyncio.run(capture(args.out, args.width, args.height))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
