"""Hindi calls, piece by piece: the language choice, danda splitting, and the Hindi
parameters on the Deepgram and Cartesia wires with Devanagari transcripts (real clients
against the fakes over loopback)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from audio.wav import read_wav_file
from config.settings import CartesiaSettings, DeepgramSettings, OpenAISettings
from pipeline.language import HINDI_LINES, CallLanguage, FixedLines, canonical_code, choose_language
from pipeline.providers.base import STTEventKind
from pipeline.providers.cartesia_tts import CartesiaTTS
from pipeline.providers.deepgram_stt import DeepgramSTT
from pipeline.providers.openai_llm import OpenAILLM
from pipeline.sentences import SentenceSplitter, split_sentences
from pipeline.turntaking.words import normalise
from testkit import FakeCartesia, FakeDeepgram, FakeOpenAI, llm
from testkit.openai_script import default_reply_text, split_tokens

pytestmark = pytest.mark.timeout(30)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
QUESTION_HI = "आप कल कितने बजे खुलते हैं?"

ENGLISH = CallLanguage(
    code="en",
    stt_language="en-US",
    tts_language="en",
    tts_voice_id=None,
    lines=FixedLines("Hello!", "Be brief.", "Sorry?", "Bye.", "Transferring.", "Unavailable."),
)
HINDI = CallLanguage(
    code="hi", stt_language="hi", tts_language="hi", tts_voice_id="hindi-voice", lines=HINDI_LINES
)
LANGUAGES = {"en": ENGLISH, "hi": HINDI}


# --- choosing the call's language ---------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "code"),
    [("hi", "hi"), ("HI-in", "hi"), ("hindi", "hi"), ("Hinglish", "hi"), ("en_US", "en")],
)
def test_lang_query_values(value: str, code: str) -> None:
    assert canonical_code(value) == code
    assert choose_language(value, LANGUAGES, "en").code == code


def test_unknown_or_unconfigured_language_falls_back_to_the_default(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert choose_language(None, LANGUAGES, "en") is ENGLISH
    assert choose_language("", LANGUAGES, "hi") is HINDI
    assert choose_language("ta", LANGUAGES, "en") is ENGLISH
    assert "Ignoring lang='ta'" in caplog.text
    assert choose_language("hi", {"en": ENGLISH}, "en") is ENGLISH


def test_hindi_lines_are_devanagari_sentences_the_splitter_keeps_whole() -> None:
    for line in (
        HINDI_LINES.greeting,
        HINDI_LINES.fallback_line,
        HINDI_LINES.goodbye_line,
        HINDI_LINES.transfer_line,
        HINDI_LINES.unavailable_line,
    ):
        assert any("\u0900" <= ch <= "\u097f" for ch in line), line
        assert " ".join(split_sentences(line)) == " ".join(line.split())


# --- danda-aware splitting ------------------------------------------------------------------

HINDI_REPLY = (
    "जी हाँ, हम कल सुबह नौ बजे खुलते हैं। शाम को सात बजे बंद होते हैं॥ "
    "क्या आप टेबल बुक करना चाहेंगे? Dr. Rao भी कल available हैं।"
)
HINDI_SENTENCES = [
    "जी हाँ, हम कल सुबह नौ बजे खुलते हैं।",
    "शाम को सात बजे बंद होते हैं॥",
    "क्या आप टेबल बुक करना चाहेंगे?",
    "Dr. Rao भी कल available हैं।",
]


def test_danda_ends_a_sentence() -> None:
    assert split_sentences(HINDI_REPLY) == HINDI_SENTENCES


def test_danda_splitting_token_by_token_matches_the_whole() -> None:
    splitter = SentenceSplitter()
    out: list[str] = []
    for token in split_tokens(HINDI_REPLY):
        out.extend(splitter.push(token))
    rest = splitter.flush()
    assert [*out, *([rest] if rest else [])] == HINDI_SENTENCES


def test_a_danda_ends_the_sentence_on_its_own_token() -> None:
    """A danda is a certain end: the sentence goes to the TTS without waiting for more."""
    splitter = SentenceSplitter()
    assert splitter.push("हम नौ बजे") == []
    assert splitter.push(" खुलते हैं।") == ["हम नौ बजे खुलते हैं।"]
    assert splitter.push(" शाम") == []
    assert splitter.flush() == "शाम"


async def test_hindi_llm_reply_streams_sentence_by_sentence() -> None:
    """The OpenAI client against the fake: Devanagari deltas in, danda sentences out."""
    async with FakeOpenAI(api_key="sk-test-hi", first_token_ms=5, per_token_ms=1) as fake:
        fake.replies.append(llm.Text(HINDI_REPLY))
        model = OpenAILLM(OpenAISettings(api_key="sk-test-hi", base_url=fake.base_url))
        splitter = SentenceSplitter()
        sentences: list[str] = []
        messages = [
            {"role": "system", "content": HINDI_LINES.system_prompt},
            {"role": "user", "content": QUESTION_HI},
        ]
        async for event in model.stream(messages, ()):
            sentences.extend(splitter.push(getattr(event, "text", "")))
        rest = splitter.flush()
        sentences += [rest] if rest else []
        await model.aclose()
        [request] = fake.requests
    assert sentences == HINDI_SENTENCES
    assert request.body["messages"][0]["content"] == HINDI_LINES.system_prompt


def test_fake_llm_answers_a_devanagari_question_in_hindi() -> None:
    reply = default_reply_text([{"role": "user", "content": QUESTION_HI}])
    assert reply == "आपने कहा: आप कल कितने बजे खुलते हैं। और कुछ?"
    assert split_sentences(reply) == ["आपने कहा: आप कल कितने बजे खुलते हैं।", "और कुछ?"]


# --- the Deepgram wire ----------------------------------------------------------------------


@pytest.mark.parametrize("language", ["hi", "multi"])
async def test_deepgram_hindi_stream_sends_the_language_and_gets_devanagari(
    language: str,
) -> None:
    wav = read_wav_file(FIXTURES / "hi_question.wav")
    rate = wav.sample_rate
    async with FakeDeepgram(api_key="dg-test-hi", utterances=[QUESTION_HI]) as fake:
        stt = DeepgramSTT(
            DeepgramSettings(
                api_key="dg-test-hi", base_url=fake.url, model="nova-3", language=language
            )
        )
        events = []
        async with stt.stream(rate) as stream:
            audio = wav.pcm + bytes(rate * 2 * 2)  # the question, then 2 s of silence
            frame = rate * 2 // 50
            for i in range(0, len(audio), frame):
                stream.send_audio(audio[i : i + frame])
            async with asyncio.timeout(10):
                async for event in stream.events():
                    events.append(event)
                    if event.kind is STTEventKind.FINAL and event.speech_final:
                        break
        [connection] = fake.connections
    assert connection.query["language"] == language
    assert connection.query["model"] == "nova-3"
    interims = [e.text for e in events if e.kind is STTEventKind.INTERIM]
    assert interims
    assert QUESTION_HI.startswith(interims[0])
    final = events[-1]
    assert final.text == QUESTION_HI
    assert normalise(final.text) == "आप कल कितने बजे खुलते हैं"


def test_fake_deepgram_words_keep_devanagari_marks_and_drop_dandas() -> None:
    from testkit import ListenOptions, TranscriptEngine

    engine = TranscriptEngine(
        ListenOptions(language="hi", sample_rate=8000, smart_format=True, endpointing_ms=300),
        next_transcript=lambda: "हाँ जी, ठीक है।",
    )
    wav = read_wav_file(FIXTURES / "bc_theek_hai.wav")
    messages = engine.feed(wav.pcm + bytes(8000))
    final = next(
        m for m in messages if m.get("is_final") and m["channel"]["alternatives"][0]["words"]
    )
    words = final["channel"]["alternatives"][0]["words"]
    assert [w["word"] for w in words] == ["हाँ", "जी", "ठीक", "है"]
    assert [w["punctuated_word"] for w in words] == ["हाँ", "जी,", "ठीक", "है।"]


# --- the Cartesia wire ----------------------------------------------------------------------


async def test_cartesia_hindi_request_carries_language_and_voice() -> None:
    async with (
        FakeCartesia(api_key="ca-test-hi", first_audio_ms=5, realtime_factor=50) as fake,
        httpx.AsyncClient() as http,
    ):
        settings = CartesiaSettings(
            api_key="ca-test-hi", voice_id="hindi-voice", base_url=fake.base_url, language="hi"
        )
        tts = CartesiaTTS(settings, http=http)
        pcm = b"".join([piece async for piece in tts.synthesize(HINDI_LINES.greeting, 8000)])
        [request] = fake.requests
    assert pcm
    assert request.body["language"] == "hi"
    assert request.body["voice"] == {"mode": "id", "id": "hindi-voice"}
    assert request.body["transcript"] == HINDI_LINES.greeting
    assert tts.cache_key(HINDI_LINES.greeting, 8000)[3] == "hi"  # never served English audio
