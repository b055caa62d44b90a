"""The call event hub: replay, live fan-out, bounded queues, the end of a call's feed."""

from __future__ import annotations

import asyncio

from pipeline.events import (
    CallEnded,
    CallerSpeech,
    CallEvent,
    CallEventHub,
    CallStarted,
    event_to_dict,
)


def _speech(call_id: str, text: str) -> CallerSpeech:
    return CallerSpeech(call_id=call_id, phase="final", text=text)


def _ended(call_id: str) -> CallEnded:
    return CallEnded(
        call_id=call_id, reason="caller_hangup", detail="", duration_s=1.0, turns=1, barge_ins=0
    )


async def test_a_call_feed_replays_then_follows_live_and_ends_with_the_call() -> None:
    hub = CallEventHub()
    hub.publish(CallStarted(call_id="a", sample_rate=8000, language="en"))
    hub.publish(_speech("b", "other call"))
    seen: list[CallEvent] = []

    async def follow() -> None:
        async for event in hub.subscribe("a"):
            seen.append(event)

    task = asyncio.create_task(follow())
    await asyncio.sleep(0)
    hub.publish(_speech("a", "hello"))
    hub.publish(_ended("a"))
    await asyncio.wait_for(task, 1)
    assert [e.kind for e in seen] == ["call_started", "caller_speech", "call_ended"]
    assert not hub._subs  # the subscription is gone once the feed ends


async def test_the_all_calls_feed_sees_every_call() -> None:
    hub = CallEventHub()
    seen: list[str] = []

    async def follow() -> None:
        async for event in hub.subscribe(None):
            seen.append(event.call_id)
            if len(seen) == 2:
                return

    task = asyncio.create_task(follow())
    await asyncio.sleep(0)
    hub.publish(_speech("a", "x"))
    hub.publish(_speech("b", "y"))
    await asyncio.wait_for(task, 1)
    assert seen == ["a", "b"]


async def test_a_slow_subscriber_loses_its_oldest_events_not_the_callers_time() -> None:
    hub = CallEventHub(queue=3)
    feed = hub.subscribe("a")
    first = asyncio.ensure_future(anext(feed))
    await asyncio.sleep(0)
    hub.publish(_speech("a", "0"))
    assert (await first).text == "0"  # type: ignore[union-attr]
    for n in range(1, 6):
        hub.publish(_speech("a", str(n)))  # nobody reads: only the last three stay
    texts = [(await anext(feed)).text for _ in range(3)]  # type: ignore[union-attr]
    assert texts == ["3", "4", "5"]
    await feed.aclose()


def test_replays_are_bounded_per_call_and_in_number_of_calls() -> None:
    hub = CallEventHub(replay=2, keep_calls=2)
    for n in range(4):
        hub.publish(_speech("a", str(n)))
    assert [e.text for e in hub.history("a")] == ["2", "3"]  # type: ignore[union-attr]
    hub.publish(_speech("b", "x"))
    hub.publish(_speech("c", "y"))
    assert not hub.known("a") and hub.known("b") and hub.known("c")


def test_a_failing_listener_does_not_stop_publishing() -> None:
    hub = CallEventHub()
    got: list[str] = []

    def broken(event: CallEvent) -> None:
        raise RuntimeError("bug in a listener")

    hub.add_listener(broken)
    hub.add_listener(lambda event: got.append(event.kind))
    hub.publish(_ended("a"))
    assert got == ["call_ended"]
    assert event_to_dict(hub.history("a")[0])["kind"] == "call_ended"
