"""Protocol-faithful fake Deepgram, OpenAI and Cartesia servers for tests and benchmarks.

The real SDKs talk to these over loopback sockets, configured only by base URLs::

    from testkit import FakeProviders, llm, tts

    async with FakeProviders() as fakes:
        env = fakes.env()  # DEEPGRAM_BASE_URL, OPENAI_BASE_URL, CARTESIA_BASE_URL, keys...
        fakes.openai.replies.append(llm.Tool("transfer_to_agent"))
        fakes.cartesia.faults.append(tts.ErrorEvent(after_chunks=2))

Scripted replies and faults: ``llm`` (aliases :mod:`testkit.openai_script`: ``Text``, ``Tool``,
``HttpError``, ``MidStreamError``, ``Stall``) and ``tts`` (:mod:`testkit.cartesia_script`:
``HttpError``, ``ErrorEvent``, ``Stall``). ``python -m testkit serve`` runs them as a process.
"""

from . import cartesia_script as tts
from . import openai_script as llm
from .deepgram_engine import ListenOptions, TranscriptEngine, VadSettings
from .deepgram_records import DeepgramConnection, HandshakeRejection
from .fake_cartesia import FakeCartesia, SpeechRequest
from .fake_deepgram import FakeDeepgram
from .fake_openai import ChatRequest, FakeOpenAI
from .http import AppServer
from .providers import DEFAULT_KEYS, FakeProviders

__all__ = [
    "DEFAULT_KEYS",
    "AppServer",
    "ChatRequest",
    "DeepgramConnection",
    "FakeCartesia",
    "FakeDeepgram",
    "FakeOpenAI",
    "FakeProviders",
    "HandshakeRejection",
    "ListenOptions",
    "SpeechRequest",
    "TranscriptEngine",
    "VadSettings",
    "llm",
    "tts",
]
