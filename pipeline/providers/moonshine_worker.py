"""Moonshine in a child process that is replaced before its memory leak matters.

moonshine-cpp 0.1.4 leaks native memory on every transcription (measured here: 18-50 MB
per utterance, its own ``transcribe_wav`` included), so a server that transcribed in
process would grow by gigabytes within an hour of calls. The server therefore runs the
model in a child process (``spawn``: no fork of a threaded server) and, after
``recycle_after`` transcriptions, switches to a standby child that was started and warmed
in the background meanwhile, then lets the old one exit. A call never waits for a model
load; the cost is one warm standby process and its start-up CPU every ``recycle_after``
utterances. Same interface as :class:`MoonshineModel` for :class:`LocalSTT`.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor

from config.logs import get_logger
from pipeline.providers.moonshine_model import MODEL_NAME, MoonshineModel

log = get_logger("MOONSHINE")

_CHILD_MODEL: MoonshineModel | None = None


def _child_start() -> None:
    """In the child: load and warm the model once, before any job."""
    global _CHILD_MODEL
    _CHILD_MODEL = MoonshineModel()
    _CHILD_MODEL.warm()


def _child_transcribe(pcm: bytes, sample_rate: int) -> str:
    assert _CHILD_MODEL is not None
    return _CHILD_MODEL.transcribe_pcm(pcm, sample_rate)


def _child_ready() -> bool:
    return _CHILD_MODEL is not None and _CHILD_MODEL.loaded


class MoonshineWorker:
    """A recycled child process running Moonshine (see the module docstring)."""

    _shared: MoonshineWorker | None = None
    _shared_lock = threading.Lock()

    @classmethod
    def shared(cls, recycle_after: int = 16) -> MoonshineWorker:
        """The process's worker (its children live as long as the process)."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls(recycle_after)
            return cls._shared

    def __init__(self, recycle_after: int = 16) -> None:
        if recycle_after < 1:
            raise ValueError(f"recycle_after must be at least 1, got {recycle_after}")
        self.recycle_after = recycle_after
        self._lock = threading.Lock()
        self._active: ProcessPoolExecutor | None = None
        self._standby: tuple[ProcessPoolExecutor, Future[bool]] | None = None
        self._jobs = 0  # on the active child
        self.recycled = 0

    @staticmethod
    def available() -> bool:
        return MoonshineModel.available()

    @property
    def loaded(self) -> bool:
        return self._active is not None

    def _spawn(self) -> tuple[ProcessPoolExecutor, Future[bool]]:
        executor = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_child_start,
        )
        return executor, executor.submit(_child_ready)

    def warm(self) -> None:
        """Start the first child and wait until its model is loaded and warm (blocking)."""
        started = time.monotonic()
        with self._lock:
            if self._active is None:
                executor, ready = self._spawn()
                ready.result()
                self._active = executor
                self._standby = self._spawn()  # warms in the background
        log.info("%s child ready in %.0f ms", MODEL_NAME, (time.monotonic() - started) * 1000)

    load = warm

    def transcribe_pcm(self, pcm: bytes, sample_rate: int) -> str:
        """Text of 16-bit mono PCM at any rate, from the child (blocking)."""
        if self._active is None:
            self.warm()
        with self._lock:
            assert self._active is not None
            text = self._active.submit(_child_transcribe, pcm, sample_rate).result()
            self._jobs += 1
            if self._jobs >= self.recycle_after:
                self._rotate()
        return text

    def _rotate(self) -> None:
        """Switch to the warm standby (waiting only if it is not ready yet)."""
        old = self._active
        executor, ready = self._standby or self._spawn()
        ready.result()
        self._active, self._jobs = executor, 0
        self._standby = self._spawn()
        self.recycled += 1
        if old is not None:
            old.shutdown(wait=False, cancel_futures=True)
        log.info("%s: switched to a fresh child (%d so far)", MODEL_NAME, self.recycled)

    def close(self) -> None:
        with self._lock:
            for executor in (self._active, self._standby[0] if self._standby else None):
                if executor is not None:
                    executor.shutdown(wait=False, cancel_futures=True)
            self._active = self._standby = None
