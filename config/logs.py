"""Log lines in Knowlarity's format: ``TIMESTAMP [call_id=X] [COMPONENT] message``.

The call id travels in a context variable, so every task a call starts (they copy the
context) logs under that call without passing it around. Components are logger names
under ``voice.`` (``voice.KNOWLARITY``, ``voice.DEEPGRAM``, ...). Configured secrets are
masked in every record, whatever code path formatted them.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from contextvars import ContextVar

call_id_var: ContextVar[str] = ContextVar("call_id", default="-")

ROOT = "voice"
FORMAT = "%(asctime)s [call_id=%(call_id)s] [%(component)s] %(message)s"
_MASK = "***"


def get_logger(component: str) -> logging.Logger:
    """Logger for one component, e.g. ``get_logger("DEEPGRAM")``."""
    return logging.getLogger(f"{ROOT}.{component}")


class CallContextFilter(logging.Filter):
    """Adds ``call_id`` and ``component`` to every record, and masks secrets."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets: tuple[str, ...] = ()
        self.set_secrets(secrets)

    def set_secrets(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret that contains another is masked whole.
        unique = {s for s in secrets if s and len(s) >= 4}
        self._secrets = tuple(sorted(unique, key=len, reverse=True))

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "call_id"):
            record.call_id = call_id_var.get()
        if not hasattr(record, "component"):
            name = record.name
            record.component = name[len(ROOT) + 1 :] if name.startswith(ROOT + ".") else name
        if self._secrets:
            message = record.getMessage()
            masked = message
            for secret in self._secrets:
                if secret in masked:
                    masked = masked.replace(secret, _MASK)
            if masked is not message:
                record.msg, record.args = masked, None
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                for secret in self._secrets:
                    record.exc_text = record.exc_text.replace(secret, _MASK)
        return True


_filter = CallContextFilter()


def setup_logging(level: str = "INFO", secrets: Iterable[str] = ()) -> None:
    """Install the call-aware format on the root logger (idempotent)."""
    _filter.set_secrets(secrets)
    root = logging.getLogger()
    root.setLevel(level)
    for handler in root.handlers:
        if getattr(handler, "_voice_agent", False):
            break
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
        handler._voice_agent = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    for handler in root.handlers:
        if _filter not in handler.filters:
            handler.addFilter(_filter)
    # Libraries log with their own names; give them a component so the format holds.
    for noisy in ("httpx", "httpcore", "websockets", "deepgram", "openai"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def mask_logger(name: str) -> None:
    """Mask secrets in records of a logger whose handlers are not ours (e.g. uvicorn's:
    its default config prints ``uvicorn.error`` with its own non-propagating handler)."""
    logger = logging.getLogger(name)
    if _filter not in logger.filters:
        logger.addFilter(_filter)


def add_secrets(secrets: Iterable[str]) -> None:
    """Mask more values (e.g. the Knowlarity SR key) from now on."""
    _filter.set_secrets((*_filter._secrets, *secrets))
