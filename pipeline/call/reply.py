"""Producing one reply: LLM -> sentence splitter -> TTS -> line, retried within its deadline.

:class:`Speaker` puts audio on the line (re-chunked to the line's chunk size) and keeps
what was said when (:class:`~pipeline.playout.SpokenSpan`), so a barge-in can cut the
history at what the caller heard. :class:`Replier` makes one reply: the LLM streams,
each finished sentence goes to the TTS while the next is being written, and the audio
goes out the moment each chunk is complete.

Provider faults: until the first audio of a turn goes out, a retryable failure is
retried (:data:`TURN_RETRY`) inside ``turn_deadline_s``; after that, or on a fault that
retrying cannot fix, :meth:`Replier.respond` returns False and the session plays the
fallback line (or ends the call after too many failed turns). Both parts need only the
provider interfaces and a line, so in-memory fakes (:mod:`testkit.memory`) build them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence

from config.logs import get_logger
from pipeline.aio import aclose, cancel_and_wait
from pipeline.call.feed import CallFeed
from pipeline.call.turn import Turn
from pipeline.playout import Playout, SpokenSpan
from pipeline.providers.base import (
    ContextTextToSpeech,
    LanguageModel,
    Message,
    ProviderError,
    TextDelta,
    TextToSpeech,
    ToolCall,
    ToolSpec,
)
from pipeline.retry import RetryPolicy
from pipeline.sentences import SentenceSplitter
from pipeline.speech_cache import SpeechCache

log = get_logger("SESSION")
llm_log = get_logger("OPENAI")

# 0.1 s, doubling; a retry needs 0.3 s left before the deadline to be worth it.
TURN_RETRY = RetryPolicy(base_s=0.1, min_attempt_s=0.3)
SENTENCE_QUEUE = 8  # sentences written ahead of the voice: bounded, the LLM waits beyond


def retry_delay(
    exc: ProviderError, attempt: int, *, heard: bool, now: float, end: float
) -> float | None:
    """How long to wait before attempt ``attempt + 1``; None means apologise instead.

    Retrying is only worth it while the caller has heard nothing of the turn (else the
    reply would restart mid-sentence), for a fault that may pass, and with enough of the
    turn deadline ``end`` left for another attempt to produce audio. A server that asked
    for a longer wait (``Retry-After``) gets it; when that cannot fit, apologise at once.
    """
    if heard or not exc.retryable:
        return None
    return TURN_RETRY.delay(attempt, retry_after_s=exc.retry_after_s, now=now, deadline=end)


class Speaker:
    """Speaks PCM streams on the line and records the turn's spans and first audio."""

    def __init__(
        self,
        playout: Playout,
        tts: TextToSpeech,
        cache: SpeechCache,
        clock: Callable[[], float],
    ) -> None:
        self.playout = playout
        self.tts = tts
        self._cache = cache
        self._clock = clock
        self._rate = playout.sample_rate
        self.audible_turn: Turn | None = None  # the turn whose audio was sent last

    async def say_line(self, text: str, turn: Turn) -> None:
        """A fixed line (greeting, apology, goodbye): from the cache when it is there."""
        await self.say(self._cache.stream(self.tts, text, self._rate), SpokenSpan(text), turn)

    async def say_sentence(self, sentence: str, turn: Turn) -> None:
        await self.say(self.tts.synthesize(sentence, self._rate), SpokenSpan(sentence), turn)

    async def say_reply(
        self, tts: ContextTextToSpeech, sentences: asyncio.Queue[str | None], turn: Turn
    ) -> None:
        """The whole reply in one TTS context: each sentence pushed as soon as it exists."""
        async with tts.context(self._rate) as ctx:
            span = SpokenSpan("", word_ends=ctx.word_ends_s)  # one span: the reply so far

            async def feed() -> None:
                while (sentence := await sentences.get()) is not None:
                    span.text = f"{span.text} {sentence}" if span.text else sentence
                    await ctx.push(sentence)
                await ctx.end()

            feeder = asyncio.create_task(feed(), name="tts-feed")
            try:
                await self.say(ctx.audio(), span, turn)
                await feeder  # done by now (the audio ends after end()); raises its error
            finally:
                await cancel_and_wait(feeder)

    async def say(self, pcm_stream: AsyncIterator[bytes], span: SpokenSpan, turn: Turn) -> None:
        chunker = self.playout.chunker()
        registered = False
        try:
            async for pcm in pcm_stream:
                if turn.tts_first_audio_at is None:
                    turn.tts_first_audio_at = self._clock()
                for chunk in chunker.push(pcm):
                    if not registered:
                        turn.spans.append(span)
                        registered = True
                    await self._send_chunk(chunk, span, turn)
        finally:
            await aclose(pcm_stream)
        tail = chunker.flush()
        if tail:
            if not registered:
                turn.spans.append(span)
            await self._send_chunk(tail, span, turn)
        self.playout.end_span(span)

    async def _send_chunk(self, pcm: bytes, span: SpokenSpan, turn: Turn) -> None:
        if turn.deadline_scope is not None:
            turn.deadline_scope.reschedule(None)  # audio is here: the deadline is met
        await self.playout.send_pcm(pcm, span)
        if turn.first_audio_at is None:
            turn.first_audio_at = self._clock()
            self.audible_turn = turn


class Replier:
    """One reply to the caller, with retries; the transfer tool only marks the turn."""

    def __init__(
        self,
        *,
        speaker: Speaker,
        llm: LanguageModel,
        tools: Sequence[ToolSpec],
        transfer_tool: str | None,
        deadline_s: float,
        feed: CallFeed,
        clock: Callable[[], float],
        first_clause_chars: int = 0,
    ) -> None:
        self._speaker = speaker
        self._first_clause_chars = first_clause_chars
        self._llm = llm
        self._tools = tools
        self._transfer_tool = transfer_tool  # the tool that asks for a person, if offered
        self.deadline_s = deadline_s
        self._feed = feed
        self._clock = clock

    async def respond(self, turn: Turn, messages: list[Message]) -> bool:
        """Speak the reply; False when it failed and the caller should hear an apology."""
        deadline = turn.started + self.deadline_s
        attempt = 0
        while True:
            attempt += 1
            try:
                if await self._attempt(turn, messages, deadline):
                    return True
                log.error(
                    "No audio within the %.1f s turn deadline; apologising to the caller",
                    self.deadline_s,
                )
            except ProviderError as exc:
                heard = turn.first_audio_at is not None
                delay = retry_delay(exc, attempt, heard=heard, now=self._clock(), end=deadline)
                self._feed.provider_issue(exc, retried=delay is not None)
                if delay is not None:
                    log.warning("%s; retrying turn in %.0f ms", exc, delay * 1000)
                    await asyncio.sleep(delay)
                    continue
                log.error("%s; apologising to the caller", exc)
            except Exception:  # a bug here must not leave the caller in silence
                log.exception("Turn failed unexpectedly; apologising to the caller")
            turn.transfer_requested = False
            turn.failed = True
            return False

    async def _attempt(self, turn: Turn, messages: list[Message], deadline: float) -> bool:
        """One try at the reply; False if no audio went out before the turn deadline."""
        loop = asyncio.get_running_loop()
        scope = asyncio.timeout_at(loop.time() + deadline - self._clock())
        turn.deadline_scope = scope  # the first chunk sent disarms it
        try:
            async with scope:
                await self._generate(turn, messages)
        except TimeoutError:
            if not scope.expired():
                raise
            return False
        finally:
            turn.deadline_scope = None
        return True

    async def _generate(self, turn: Turn, messages: list[Message]) -> None:
        """LLM and TTS side by side: sentence N is spoken while N+1 is being written."""
        sentences: asyncio.Queue[str | None] = asyncio.Queue(maxsize=SENTENCE_QUEUE)
        think = asyncio.create_task(self._think(turn, messages, sentences), name="think")
        voice = asyncio.create_task(self._voice(turn, sentences), name="voice")
        try:
            await asyncio.wait({think, voice}, return_when=asyncio.FIRST_EXCEPTION)
            for task in (think, voice):
                if task.done() and not task.cancelled() and (exc := task.exception()) is not None:
                    raise exc
        finally:
            for task in (think, voice):
                if not task.done():
                    task.cancel()
                    await asyncio.wait({task})

    async def _think(
        self, turn: Turn, messages: list[Message], out: asyncio.Queue[str | None]
    ) -> None:
        splitter = SentenceSplitter(first_clause_chars=self._first_clause_chars)
        stream = self._llm.stream(messages, self._tools)
        try:
            async for event in stream:
                if turn.llm_first_token_at is None:
                    turn.llm_first_token_at = self._clock()
                if isinstance(event, TextDelta):
                    for sentence in splitter.push(event.text):
                        llm_log.info('Sentence | text="%s"', sentence)
                        await out.put(sentence)
                elif isinstance(event, ToolCall):
                    self._on_tool_call(turn, event)
        finally:
            await aclose(stream)
        rest = splitter.flush()
        if rest:
            llm_log.info('Sentence | text="%s"', rest)
            await out.put(rest)
        await out.put(None)

    def _on_tool_call(self, turn: Turn, call: ToolCall) -> None:
        if call.name == self._transfer_tool:
            turn.transfer_requested = True
        else:
            llm_log.warning("Ignoring unknown tool call %r", call.name)

    async def _voice(self, turn: Turn, sentences: asyncio.Queue[str | None]) -> None:
        tts = self._speaker.tts
        if isinstance(tts, ContextTextToSpeech):
            await self._speaker.say_reply(tts, sentences, turn)
            return
        while (sentence := await sentences.get()) is not None:
            await self._speaker.say_sentence(sentence, turn)
