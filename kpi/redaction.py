"""Keep Knowlarity secrets (the SR key sits in the konnect URL) out of every log line."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from config.logs import add_secrets

_MASK = "***"


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in sorted(set(secrets), key=len, reverse=True):
        if secret:
            text = text.replace(secret, _MASK)
    return text


class _RedactLibraryLogs(logging.Filter):
    """Masks our secrets in httpx's own log lines (they print request URLs)."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            masked = redact(message, self.secrets)
            if masked != message:
                record.msg, record.args = masked, None
        return True


_library_filter = _RedactLibraryLogs()
_LIBRARY_LOGGERS = ("httpx", "httpcore", "httpcore.connection", "httpcore.http11")


def guard_logs(secrets: Iterable[str]) -> None:
    """Mask these secrets in httpx's records and on the app's log handlers."""
    values = [s for s in secrets if len(s) >= 4]
    if not values:
        return
    _library_filter.secrets.update(values)
    for name in _LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if _library_filter not in logger.filters:
            logger.addFilter(_library_filter)
    add_secrets(values)
