"""The playground in a real headless Chromium, talking to a real server over /voice.

The page is the Stream Node here: it captures Chromium's fake microphone (a WAV built
per test) with its AudioWorklet, resamples it, streams 20 ms frames, plays the replies
on the Web Audio clock, and reads the call's event feed. Each test checks the call from
both sides: the page's own state and what it shows, and the server's records and tasks.
The scenarios run on every stack in ``tests/playground_stacks.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.events import AgentSpeech, BargeIn, CallEnded, CallerSpeech, TurnTimings
from tests.browser import PageProbe, chromium, mic_wav
from tests.caller import session_tasks
from tests.conftest import FIXTURES, StartServer, register_secret
from tests.playground_stacks import STACKS, Stack, open_stack

QUESTION = "What time do you open tomorrow?"
LONG_REPLY = (
    "We open at nine in the morning and close at six in the evening. "
    "On Saturdays we open at ten and close at two in the afternoon. "
    "On Sundays and public holidays the branch stays closed all day long."
)
GREETING_S = 3.5  # the mic stays silent this long: the greeting plays out first
# Bound on waiting for an answer to be heard and played out. The keyless stack's answers
# are 10 s of speech, and on a loaded 2-core box its recogniser takes seconds: the waits
# end as soon as the page shows the answer, this is only how long before giving up.
ANSWER_S = 60.0

StartStack = Callable[..., Any]


@contextlib.asynccontextmanager
async def _starter(name: str) -> AsyncIterator[StartStack]:
    async with contextlib.AsyncExitStack() as running:

        async def start(**overrides: Any) -> Stack:
            return await running.enter_async_context(open_stack(name, **overrides))

        yield start


@pytest.fixture(params=STACKS)
async def start_stack(request: pytest.FixtureRequest) -> AsyncIterator[StartStack]:
    """``await start_stack(**setting_overrides)``: a running server on each stack."""
    async with _starter(request.param) as start:
        yield start


@pytest.fixture
async def start_fakes() -> AsyncIterator[StartStack]:
    """The same, on the provider fakes only (scenarios that script the providers)."""
    async with _starter("fakes") as start:
        yield start


async def _ended(stack: Stack, call_id: str) -> CallEnded:
    for _ in range(200):
        for event in stack.server.state.events.history(call_id):
            if isinstance(event, CallEnded):
                return event
        await asyncio.sleep(0.05)
    raise AssertionError(f"the server never ended {call_id}")


def _answer_playing(state: dict[str, Any]) -> bool:
    """The first answer has played for half a second (5 chunks) with 2.5 s more queued
    in the page: more than the caller's words take to become a killAudio (the clip's
    0.3 s lead-in, the VAD onset, the 400 ms decision), even on a loaded box."""
    lines = state["lines"]
    return len(lines) > 1 and lines[1]["played"] >= 5 and state["queuedMs"] >= 2500


def _line_played(index: int) -> Callable[[dict[str, Any]], bool]:
    def check(state: dict[str, Any]) -> bool:
        lines = state["lines"]
        return len(lines) > index and lines[index]["played"] == lines[index]["chunks"]

    return check


async def _assert_nothing_left(stack: Stack) -> None:
    """No call, call task or event feed outlives the page (closing sockets takes a moment)."""
    state = stack.server.state

    def left() -> list[str]:
        feeds = {t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("call-feed")}
        return [
            *(["a /voice connection"] if state.lifecycle.calls.connections else []),
            *sorted(session_tasks() | feeds),
            *(["an event feed"] if stack.server.app.state.call_feeds.open else []),
            *(["a hub subscription"] if state.events._subs else []),
        ]

    for _ in range(100):
        if not left():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"still running after the call: {left()}")


async def test_a_call_from_the_page_greets_hears_answers_and_hangs_up(
    start_stack: StartStack, tmp_path: Path
) -> None:
    stack = await start_stack()
    stack.script(heard=[QUESTION], replies=["We open at nine tomorrow."])
    mic = mic_wav(tmp_path / "mic.wav", stack.greeting_s, "question.wav", 8.0)
    async with chromium(mic) as browser:
        probe = PageProbe(await browser.new_page())
        await probe.open(stack.server.http_url)
        await probe.page.check("#rate-8000")
        await probe.page.click("#call")
        state = await probe.wait_state(lambda s: s["phase"] == "live", "the call to start")
        call_id = state["callId"]
        assert call_id.startswith("web-") and state["sampleRate"] == 8000

        # The greeting played: every chunk of it, back to back on the audio clock.
        state = await probe.wait_state(_line_played(0), "the greeting to play out")
        assert state["lines"][0]["chunks"] >= 5 and state["lines"][0]["killed"] == 0
        assert state["greetingMs"] is not None

        # The question was heard, and the reply played out.
        state = await probe.wait_state(
            lambda s: _line_played(1)(s) and any(e["kind"] == "turn_timings" for e in s["events"]),
            "the reply to play out",
            timeout_s=ANSWER_S,
        )
        events = stack.server.state.events.history(call_id)
        (heard,) = [e.text for e in events if isinstance(e, CallerSpeech) and e.phase == "final"]
        assert stack.heard_as(QUESTION, heard), f"the STT heard {heard!r}"
        (reply,) = [e.text for e in events if isinstance(e, AgentSpeech) and e.turn == 1]
        shown = await probe.page.inner_text("#transcript")
        assert heard in shown and reply in shown

        # The latency panel: numbers for turn 1, from the server and from the page.
        row = probe.page.locator("#turns tbody tr[data-turn='1']")
        # callerSide: the page's own measure; endOfSpeechToAudio: the server's VAD's.
        fields = ("callerSide", "endOfSpeechToAudio", "sttToLlm", "llmToTts", "ttsToSent")
        for cell in (*fields, "sttToAudio"):
            text = (await row.locator(f"td[data-field={cell}]").inner_text()).strip()
            assert text.isdigit(), f"{cell} shows {text!r}"
        assert await probe.page.locator("#live-chart svg rect.stage-llm:not(.legend)").count() == 1
        (measure,) = state["callerMeasures"]
        assert 0 < measure["ms"] < 10_000

        # Every playAudio was scheduled back to back within a line, none overlapping.
        schedule = state["schedule"]
        assert len(schedule) == state["received"] and state["playerErrors"] == []
        for before, after in itertools.pairwise(schedule):
            assert after["start"] >= before["end"] - 1e-9, f"overlap: {before}, {after}"
            if after["line"] == before["line"]:
                assert after["start"] == pytest.approx(before["end"], abs=1e-9)

        # Hanging up from the page ends the call on the server; the feed closes after it.
        await probe.page.click("#hangup")
        ended = await _ended(stack, call_id)
        state = await probe.wait_state(lambda s: s["feedClosed"], "the event feed to close")
        assert state["phase"] == "ended"
        assert ended.reason == "caller_hangup" and ended.turns == 1

        # The history view lists the call and opens its transcript and latency chart.
        await probe.page.click("nav a[href='#history']")
        row = probe.page.locator(f"#history-rows tr[data-call='{call_id}']")
        await row.wait_for()
        cells = [c.strip() for c in await row.locator("td").all_inner_texts()]
        assert cells[2:] == ["1", "0", "caller hangup"]
        await row.locator("button").click()
        detail = probe.page.locator("#history-detail")
        await detail.locator("svg.latency-chart").wait_for()
        assert reply in await detail.locator(".transcript").inner_text()
        assert await detail.locator("tr[data-turn='1'] td[data-field=callerSide]").inner_text()
        assert probe.errors == []

    timings = [e for e in stack.server.state.events.history(call_id) if isinstance(e, TurnTimings)]
    assert [t.outcome for t in timings] == ["answered"]
    record = stack.server.state.registry.get(call_id)
    assert record is not None and not record.active
    await _assert_nothing_left(stack)


async def test_talking_over_the_bot_stops_its_playback_in_the_page(
    start_stack: StartStack, tmp_path: Path
) -> None:
    # The bot pauses at the caller's first sound and the killAudio follows once the words
    # (or 400 ms of speech without words yet, on the keyless stack) say it is a barge-in.
    # With the usual 400 ms of audio queued at the line the page would have played it out
    # by then; a 3 s lead keeps audio queued in the page for the killAudio to stop and drop.
    stack = await start_stack(playout_lead_ms=3000)
    stack.script(heard=[QUESTION, "Wait, stop."], replies=[LONG_REPLY, "Sure, go ahead."])
    mic = mic_wav(tmp_path / "mic.wav", stack.greeting_s, "question.wav", 1.0)
    async with chromium(mic) as browser:
        probe = PageProbe(await browser.new_page())
        await probe.open(stack.server.http_url)
        await probe.page.check("#rate-16000")
        await probe.page.set_input_files("#wav", str(FIXTURES / "stop.wav"))
        await probe.page.click("#call")
        # "Wait, stop." once the answer is audibly playing with seconds of it to come: when
        # that is depends on the speed of the box (the keyless stack's recogniser), not on
        # a fixed place in the microphone's recording.
        await probe.wait_state(_answer_playing, "the answer to play", timeout_s=ANSWER_S)
        await probe.page.click("#say-wav")
        state = await probe.wait_state(lambda s: bool(s["kills"]), "killAudio", timeout_s=ANSWER_S)
        call_id = state["callId"]
        kill = state["kills"][0]
        # The reply was playing with more queued: the playing chunk stopped, the rest dropped.
        assert kill["stopped"] >= 1 and kill["queuedMs"] > 0  # audio was queued, and dropped
        state = await probe.wait_state(lambda s: "levelAfter" in s["kills"][0], "a level check")
        assert state["kills"][0]["levelAfter"] < 1e-4, "bot audio still audible after killAudio"
        cut = [e for e in state["schedule"] if e["state"] == "killed"]
        (line,) = {e["line"] for e in cut}  # one run of audio was cut: the answer's
        assert len(cut) == kill["stopped"] and line > 0  # not the greeting
        assert (
            state["lines"][line]["played"] + state["lines"][line]["killed"]
            == (state["lines"][line]["chunks"])
        )
        # The page shows the barge-in, and the next reply plays as a new line.
        await probe.wait_state(
            _line_played(line + 1), "the answer to the interruption", timeout_s=ANSWER_S
        )
        assert (await probe.page.inner_text("#barge-ins")).strip() == "1"
        assert "You interrupted" in await probe.page.inner_text("#transcript")
        outcome = probe.page.locator("#turns tr[data-turn='1'] td[data-field=outcome]")
        assert "barge-in" in await outcome.inner_text()
        await probe.page.click("#hangup")
        ended = await _ended(stack, call_id)
        assert probe.errors == []

    assert ended.barge_ins == 1
    (barge_in,) = [e for e in stack.server.state.events.history(call_id) if isinstance(e, BargeIn)]
    assert barge_in.turn == 1
    await _assert_nothing_left(stack)


async def test_a_wav_file_speaks_instead_of_the_microphone(
    start_fakes: StartStack, tmp_path: Path
) -> None:
    stack = await start_fakes()
    stack.script(heard=[QUESTION], replies=["We open at nine tomorrow."])
    speech = mic_wav(tmp_path / "speech.wav", GREETING_S, "question.wav", 1.0)
    async with chromium(None) as browser:  # the fake microphone only beeps: unused here
        probe = PageProbe(await browser.new_page())
        await probe.open(stack.server.http_url)
        await probe.page.check("#input-file")
        await probe.page.set_input_files("#wav", str(speech))
        await probe.page.click("#call")
        state = await probe.wait_state(_line_played(1), "the reply", timeout_s=ANSWER_S)
        events = stack.server.state.events.history(state["callId"])
        (heard,) = [e.text for e in events if isinstance(e, CallerSpeech) and e.phase == "final"]
        assert stack.heard_as(QUESTION, heard)
        await probe.wait_state(lambda s: s["inputEnded"], "the file to end")
        await probe.page.click("#hangup")
        await _ended(stack, state["callId"])
        assert probe.errors == []
    await _assert_nothing_left(stack)


async def test_muted_the_page_keeps_streaming_silence(
    start_fakes: StartStack, tmp_path: Path
) -> None:
    stack = await start_fakes()
    stack.script(heard=[QUESTION], replies=["We open at nine tomorrow."])
    mic = mic_wav(tmp_path / "mic.wav", 2.0, "question.wav", 2.0)
    async with chromium(mic) as browser:
        probe = PageProbe(await browser.new_page())
        await probe.open(stack.server.http_url)
        # Keyboard only: Tab to the Call button, Enter; focus lands on Hang up; Tab, Space.
        await probe.page.focus("#rate-16000")
        for _ in range(10):
            if await probe.page.evaluate("document.activeElement.id") == "call":
                break
            await probe.page.keyboard.press("Tab")
        await probe.page.keyboard.press("Enter")
        await probe.wait_state(lambda s: s["phase"] == "live", "the call")
        assert await probe.page.evaluate("document.activeElement.id") == "hangup"
        await probe.page.keyboard.press("Tab")
        await probe.page.keyboard.press("Space")  # mute, before the question starts
        assert await probe.page.get_attribute("#mute", "aria-pressed") == "true"
        muted_from = (await probe.state())["framesSent"]
        await probe.page.wait_for_timeout(5000)  # the question plays into the muted mic
        state = await probe.state()
        sent = state["framesSent"] - muted_from
        assert sent >= 200, f"only {sent} frames in 5 s: the stream must stay continuous"
        assert set(state["levels"][-sent:]) == {0}
        events = stack.server.state.events.history(state["callId"])
        assert not [e for e in events if isinstance(e, CallerSpeech)]
        await probe.page.click("#mute")
        assert await probe.page.get_attribute("#mute", "aria-pressed") == "false"
        await probe.page.click("#hangup")
        await _ended(stack, state["callId"])
        assert probe.errors == []
    await _assert_nothing_left(stack)


async def test_the_page_shows_a_transfer_and_a_disconnect(
    start_fakes: StartStack, tmp_path: Path
) -> None:
    number = "+919800000001"
    stack = await start_fakes(transfer_number=number, silence_timeout_s=3.0)
    asks = stack.script_transfer()
    mic = mic_wav(tmp_path / "mic.wav", GREETING_S, asks, 6.0)
    async with chromium(mic) as browser:
        probe = PageProbe(await browser.new_page())
        await probe.open(stack.server.http_url)
        await probe.page.click("#call")
        state = await probe.wait_state(lambda s: s["phase"] == "ended", "the transfer", 25)
        assert state["transferTo"] == number and not state["disconnected"]
        assert f"transferred to {number}" in await probe.page.inner_text("#status")
        # The hand-off line played out in full before the page let the call go.
        assert _line_played(1)(state) and state["lines"][1]["killed"] == 0
        assert (await _ended(stack, state["callId"])).reason == "transfer"

        # A second call, muted: the agent hears nothing, says goodbye, and disconnects.
        await probe.page.click("#call")
        await probe.wait_state(lambda s: s["phase"] == "live", "the second call")
        await probe.page.click("#mute")
        state = await probe.wait_state(lambda s: s["phase"] == "ended", "the disconnect", 25)
        assert state["disconnected"] and state["transferTo"] is None
        assert "the agent disconnected" in await probe.page.inner_text("#status")
        assert _line_played(1)(state)  # the goodbye line, after the greeting
        assert (await _ended(stack, state["callId"])).reason == "timeout"
        assert probe.errors == []
    await _assert_nothing_left(stack)


async def test_with_a_stream_token_the_page_asks_for_it(
    start_fakes: StartStack, tmp_path: Path
) -> None:
    token = "playground-token-8d1f"
    register_secret(token)
    stack = await start_fakes(voice_ws_token=token)
    stack.script(heard=[QUESTION], replies=["We open at nine tomorrow."])
    mic = mic_wav(tmp_path / "mic.wav", GREETING_S, "question.wav", 4.0)
    async with chromium(mic) as browser:
        probe = PageProbe(await browser.new_page())
        await probe.open(stack.server.http_url)
        assert await probe.page.is_visible("#token")
        await probe.page.click("#call")  # no token: the page asks, nothing is dialled
        assert "stream token" in await probe.page.inner_text("#status")
        assert await probe.state() is None

        await probe.page.fill("#token", "wrong")
        await probe.page.click("#call")
        await probe.wait_state(lambda s: s["phase"] == "ended", "the refused call")
        assert "refused" in await probe.page.inner_text("#status")
        assert stack.server.state.registry.recent() == []

        await probe.page.fill("#token", token)
        await probe.page.click("#call")
        state = await probe.wait_state(_line_played(1), "the reply", timeout_s=ANSWER_S)
        assert any(e["kind"] == "turn_timings" for e in state["events"])  # the feed let it in
        stored = await probe.page.evaluate("sessionStorage.getItem('voice-playground-token')")
        assert stored == token
        await probe.page.click("#hangup")
        await _ended(stack, state["callId"])
        await probe.page.click("nav a[href='#history']")
        await probe.page.locator(f"#history-rows tr[data-call='{state['callId']}']").wait_for()
        (refused,) = probe.errors  # Chromium reports the refused handshake, nothing else
        assert "token=wrong" in refused and "403" in refused
    await _assert_nothing_left(stack)


async def test_the_history_reads_a_call_from_the_records_store(
    start_fakes: StartStack, tmp_path: Path
) -> None:
    """A call made in the page is in the history of a server that never held it: a second
    server on the same records database (a restart, or another replica) shows it."""
    database = f"sqlite+aiosqlite:///{tmp_path / 'records.db'}"
    first = await start_fakes(database_url=database)
    first.script(heard=[QUESTION], replies=["We open at nine tomorrow."])
    mic = mic_wav(tmp_path / "mic.wav", GREETING_S, "question.wav", 4.0)
    async with chromium(mic) as browser:
        probe = PageProbe(await browser.new_page())
        await probe.open(first.server.http_url)
        await probe.page.click("#call")
        state = await probe.wait_state(_line_played(1), "the reply", timeout_s=ANSWER_S)
        call_id = state["callId"]
        await probe.page.click("#hangup")
        await _ended(first, call_id)
        store = first.server.app.state.ops.store
        for _ in range(200):  # the writer stores the call's end in its next batch
            record = await store.get(call_id)
            if record is not None and not record.active:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"the records store never got the end of {call_id}")

        second = await start_fakes(database_url=database)
        assert not second.server.state.events.known(call_id)
        await probe.open(second.server.http_url, "#history")
        row = probe.page.locator(f"#history-rows tr[data-call='{call_id}']")
        await row.wait_for()
        assert await row.get_attribute("data-source") == "records"
        assert "the call records database" in await probe.page.inner_text("#history-status")
        cells = [c.strip() for c in await row.locator("td").all_inner_texts()]
        assert cells[2:] == ["1", "0", "caller hangup"]
        await row.locator("button").click()
        detail = probe.page.locator("#history-detail")
        await detail.locator("svg.latency-chart").wait_for()
        assert await detail.get_attribute("data-source") == "records"
        shown = await detail.locator(".transcript").inner_text()
        assert QUESTION in shown and "We open at nine tomorrow." in shown
        turn = detail.locator("tr[data-turn='1']")
        for cell in ("sttToLlm", "llmToTts", "ttsToSent", "sttToAudio"):
            text = (await turn.locator(f"td[data-field={cell}]").inner_text()).strip()
            assert text.isdigit(), f"{cell} shows {text!r}"
        assert await detail.locator("svg rect.stage-llm:not(.legend)").count() == 1
        assert probe.errors == []
    await _assert_nothing_left(first)


async def test_the_page_fits_a_phone_screen(start_server: StartServer) -> None:
    server = await start_server()
    width = 360
    async with chromium(None) as browser:
        probe = PageProbe(await browser.new_page(viewport={"width": width, "height": 740}))
        for view in ("", "#history"):
            await probe.open(server.http_url, view)
            page = probe.page
            scroll = "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            assert await page.evaluate(scroll) <= 0, f"the {view or 'call'} view scrolls sideways"
            controls = ("#call", "#hangup", "#mute") if not view else ("#history-refresh",)
            for selector in (*controls, "nav a[href='#history']"):
                box = await page.locator(selector).bounding_box()
                assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
                assert box["height"] >= 24, f"{selector} is too small to tap"
        assert probe.errors == []


async def test_docs_load_nothing_from_outside(start_server: StartServer) -> None:
    admin = "docs-admin-token-5kq9w"
    register_secret(admin)
    server = await start_server(admin_api_token=admin)
    outside: list[str] = []
    async with chromium(None) as browser:
        page = await browser.new_page()

        async def only_loopback(route: Any) -> None:
            if route.request.url.startswith(server.http_url):
                await route.continue_()
            else:
                outside.append(route.request.url)
                await route.abort()

        await page.route("**/*", only_loopback)
        await page.goto(f"{server.http_url}/docs")
        await page.fill("#admin-token", admin)  # the schema needs the admin token
        await page.click("#docs-token button")
        await page.locator(".swagger-ui .info .title").wait_for()
        assert "Knowlarity voice agent" in await page.inner_text(".swagger-ui .info .title")
        await page.locator(".opblock-summary-path[data-path='/api/calls']").first.wait_for()
        await page.reload()  # the token is kept for the tab: the schema loads at once
        await page.locator(".opblock-summary-path[data-path='/api/calls']").first.wait_for()
    assert outside == []
