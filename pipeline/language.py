"""The language a call runs in: what the STT listens for, how the TTS speaks, what is said.

One server serves several languages: the Stream Node's URL picks one per call
(``wss://host/voice?lang=hi``), else the server's default. A language bundles the STT
language code (Deepgram ``hi``, or ``multi`` for Hindi-English code-switching), the TTS
language and voice (Cartesia ``language=hi`` with a Hindi voice id), the system prompt and
the fixed lines (greeting, fallback, goodbye, hand-off, unavailable).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from config.logs import get_logger
from config.settings import Settings
from pipeline.agent import AgentConfig

__all__ = [
    "HINDI_LINES",
    "CallLanguage",
    "FixedLines",
    "call_languages",
    "canonical_code",
    "choose_language",
]

log = get_logger("SESSION")

# What callers and operators write for each language we ship lines for.
_ALIASES = {
    "en": "en",
    "en-us": "en",
    "en-in": "en",
    "en-gb": "en",
    "english": "en",
    "hi": "hi",
    "hi-in": "hi",
    "hindi": "hi",
    "hinglish": "hi",
}


@dataclass(frozen=True, slots=True)
class FixedLines:
    """The system prompt and the lines the agent says word for word (all cached)."""

    greeting: str
    system_prompt: str
    fallback_line: str
    goodbye_line: str
    transfer_line: str
    unavailable_line: str


HINDI_LINES = FixedLines(
    greeting="नमस्ते! बताइए, मैं आपकी क्या मदद करूँ?",
    system_prompt=(
        "आप फ़ोन कॉल पर एक मददगार वॉइस असिस्टेंट हैं। कॉलर से सरल, स्वाभाविक हिंदी में बात "
        "करें और देवनागरी लिपि में लिखें; अगर कॉलर हिंदी और अंग्रेज़ी मिलाकर (Hinglish) बोले, "
        "तो वैसे ही जवाब दें। जवाब छोटे रखें: एक या दो वाक्य, कोई सूची नहीं, कोई markdown "
        "नहीं। हर वाक्य पूर्ण विराम (।) या प्रश्नचिह्न (?) से ख़त्म करें।"
    ),
    fallback_line="माफ़ कीजिए, आपकी बात ठीक से सुनाई नहीं दी। कृपया एक बार फिर बताइए।",
    goodbye_line="कॉल करने के लिए धन्यवाद। नमस्ते!",
    transfer_line="ज़रूर, आपको अभी हमारे एक सहयोगी से जोड़ा जा रहा है।",
    unavailable_line=("माफ़ कीजिए, हमारी सहायक सेवा अभी उपलब्ध नहीं है। कृपया थोड़ी देर बाद फिर कॉल करें।"),
)


@dataclass(frozen=True, slots=True)
class CallLanguage:
    code: str  # "en", "hi": what ?lang= selects
    stt_language: str  # Deepgram's language parameter: "en-US", "hi", "multi"
    tts_language: str  # Cartesia's language parameter: "en", "hi"
    tts_voice_id: str | None  # None: the TTS's configured voice
    lines: FixedLines

    def agent(self, base: AgentConfig) -> AgentConfig:
        """``base`` speaking this language's prompt and lines."""
        lines = self.lines
        return dataclasses.replace(
            base,
            greeting=lines.greeting,
            system_prompt=lines.system_prompt,
            fallback_line=lines.fallback_line,
            goodbye_line=lines.goodbye_line,
            transfer_line=lines.transfer_line,
            unavailable_line=lines.unavailable_line,
        )


def call_languages(settings: Settings, base: AgentConfig) -> dict[str, CallLanguage]:
    """``en`` from the plain settings (GREETING, DEEPGRAM_LANGUAGE, ...), ``hi`` from the
    ``*_HI`` ones, each unset Hindi line falling back to the built-in one."""
    english = CallLanguage(
        code="en",
        stt_language=settings.deepgram.language,
        tts_language=settings.cartesia.language,
        tts_voice_id=None,
        lines=FixedLines(
            greeting=base.greeting,
            system_prompt=base.system_prompt,
            fallback_line=base.fallback_line,
            goodbye_line=base.goodbye_line,
            transfer_line=base.transfer_line,
            unavailable_line=base.unavailable_line,
        ),
    )
    hindi = settings.hindi
    default = HINDI_LINES
    lines = FixedLines(
        greeting=hindi.greeting or default.greeting,
        system_prompt=hindi.system_prompt or default.system_prompt,
        fallback_line=hindi.fallback_line or default.fallback_line,
        goodbye_line=hindi.goodbye_line or default.goodbye_line,
        transfer_line=hindi.transfer_line or default.transfer_line,
        unavailable_line=hindi.unavailable_line or default.unavailable_line,
    )
    hindi_language = CallLanguage(
        code="hi",
        stt_language=hindi.deepgram_language,
        tts_language=hindi.cartesia_language,
        tts_voice_id=hindi.cartesia_voice_id,
        lines=lines,
    )
    return {"en": english, "hi": hindi_language}


def canonical_code(value: str) -> str | None:
    """``hi``/``hi-IN``/``Hindi``/``hinglish`` -> ``hi``; None for a language we lack."""
    return _ALIASES.get(value.strip().lower().replace("_", "-"))


def choose_language(
    query_value: str | None, languages: Mapping[str, CallLanguage], default: str
) -> CallLanguage:
    """The call's language from ``?lang=`` (unknown or unconfigured: the default, logged)."""
    if query_value:
        code = canonical_code(query_value)
        if code is not None and code in languages:
            return languages[code]
        log.warning(
            "Ignoring lang=%r (configured: %s); using %s",
            query_value[:20],
            ", ".join(sorted(languages)),
            default,
        )
    return languages[default]
