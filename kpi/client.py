"""Async client of the Knowlarity account API (kpi.knowlarity.com) and its konnect stream.

One shared ``httpx.AsyncClient`` carries everything. The retry policy is about phone
calls: ``makecall`` and ``otpcall`` ring a real person, so they are retried only when the
request certainly never reached Knowlarity (the connection was never made); a timeout
after sending is reported, never retried. Reads (the registrations list) also retry
timeouts and 5xx answers. The konnect stream reconnects forever, one connection at a time.

The SR API key is part of the konnect URL: it is never logged (URLs are redacted, and
httpx's own request log is masked too).

(Over 400 lines on purpose: one client, one retry rule for calls; the pure request
builders and response parsing already live in kpi/wire.py, kpi/models.py, kpi/errors.py.)
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import ssl
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from config.logs import get_logger
from kpi import validation
from kpi.errors import (
    ConfigError,
    Expect,
    InputError,
    KnowlarityTransportError,
    check_response,
)
from kpi.konnect_stream import KonnectFramer
from kpi.models import (
    KonnectEvent,
    MakeCallResult,
    MessageResult,
    NotificationList,
    NotificationRegistration,
    OtpCallResult,
    PageMeta,
    UnknownEvent,
    parse_event,
)
from kpi.redaction import guard_logs, redact
from kpi.validation import Channel
from kpi.wire import (
    encode_query,
    makecall_body,
    next_page,
    notifications_filters,
    otpcall_query,
)
from pipeline.aio import Closing
from pipeline.retry import RetryPolicy

if TYPE_CHECKING:
    from config.settings import KnowlaritySettings

log = get_logger("KPI")
stream_log = get_logger("KONNECT")

_MASK = "***"
REQUEST_BACKOFF_CAP_S = 10.0
_MAX_PAGES = 1000  # a guard against a server whose `next` never ends
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Raised before a single byte of the request went out: always safe to retry.
_NEVER_SENT: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class KpiConfig:
    api_key: str | None = field(default=None, repr=False)
    sr_api_key: str | None = field(default=None, repr=False)
    base_url: str = "https://kpi.knowlarity.com"
    channel: Channel = "Basic"
    k_number: str | None = None
    agent_number: str | None = None
    notifications_url: str = "https://konnect.knowlarity.com:8100"
    timeout_s: float = 15.0
    connect_timeout_s: float = 5.0
    retries: int = 2
    retry_backoff_s: float = 0.5
    stream_idle_timeout_s: float = 300.0
    stream_backoff_initial_s: float = 1.0
    stream_backoff_max_s: float = 60.0

    @classmethod
    def from_settings(cls, settings: KnowlaritySettings) -> KpiConfig:
        def secret(value: SecretStr | None) -> str | None:
            return (value.get_secret_value().strip() or None) if value is not None else None

        return cls(
            api_key=secret(settings.api_key),
            sr_api_key=secret(settings.sr_api_key),
            base_url=settings.base_url,
            channel=settings.channel,
            k_number=settings.number,
            agent_number=settings.agent_number,
            notifications_url=settings.notifications_url,
            timeout_s=settings.timeout_s,
            connect_timeout_s=settings.connect_timeout_s,
            retries=settings.retries,
            retry_backoff_s=settings.retry_backoff_s,
            stream_idle_timeout_s=settings.stream_idle_timeout_s,
            stream_backoff_initial_s=settings.stream_backoff_initial_s,
            stream_backoff_max_s=settings.stream_backoff_max_s,
        )

    @property
    def secrets(self) -> list[str]:
        values = [self.api_key, self.sr_api_key]
        if self.sr_api_key:
            values.append(quote(self.sr_api_key, safe=""))  # as it appears in the URL
        return [v for v in values if v]


class KnowlarityClient(Closing):
    """Calls, OTP calls, notification registrations and the live event stream."""

    def __init__(
        self,
        config: KpiConfig,
        *,
        http: httpx.AsyncClient | None = None,
        sleep: Sleep = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self._owns_http = http is None
        if http is None:
            http = httpx.AsyncClient(verify=_tls_context(), follow_redirects=False)
        self._http = http
        self._sleep = sleep
        self._rand = rand
        self._timeout = httpx.Timeout(config.timeout_s, connect=config.connect_timeout_s)
        # Which requests may be retried is decided per request (see _request); this is the wait.
        self._request_retry = RetryPolicy(
            base_s=config.retry_backoff_s, cap_s=REQUEST_BACKOFF_CAP_S, jitter="equal"
        )
        self._stream_timeout = httpx.Timeout(
            config.timeout_s, connect=config.connect_timeout_s, read=config.stream_idle_timeout_s
        )
        self._api_root = f"{config.base_url.rstrip('/')}/{validation.channel(config.channel)}"
        self._api_root += "/v1/account"
        self._streaming = False
        self._stream_connected = False
        self._last_event_id: str | None = None
        self._server_retry_s: float | None = None
        self._unparsed_logged = 0
        self._json_lines_noted = False
        guard_logs(config.secrets)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    # --- calls ---------------------------------------------------------------------

    async def makecall(
        self,
        customer_number: str,
        *,
        agent_number: str | None = None,
        k_number: str | None = None,
        caller_id: str | None = None,
        whatsapp: bool = False,
        call_permission_request: bool | None = None,
    ) -> MakeCallResult:
        """``POST /{channel}/v1/account/call/makecall``: ring the agent, then the customer."""
        validation.e164(customer_number, "customer_number")  # the caller's own input first
        body = makecall_body(
            k_number=_pick(k_number, self.config.k_number, "k_number", "KNOWLARITY_NUMBER"),
            agent_number=_pick(
                agent_number, self.config.agent_number, "agent_number", "KNOWLARITY_AGENT_NUMBER"
            ),
            customer_number=customer_number,
            caller_id=caller_id,
            whatsapp=whatsapp,
            call_permission_request=call_permission_request,
        )
        answer = await self._request(
            "POST", "call/makecall", expect="success", body=body, idempotent=False
        )
        return MakeCallResult.model_validate(answer)

    async def otpcall(
        self,
        ivr_id: str,
        customer_number: str,
        *,
        k_number: str | None = None,
        whatsapp: bool = False,
        call_permission_request: bool | None = None,
    ) -> OtpCallResult:
        """``GET /{channel}/v1/account/otpcall?ivr_id=..&k_number=%2B..&customer_number=%2B..``"""
        validation.ivr_id(ivr_id)
        validation.e164(customer_number, "customer_number")
        query = otpcall_query(
            ivr_id=ivr_id,
            k_number=_pick(k_number, self.config.k_number, "k_number", "KNOWLARITY_NUMBER"),
            customer_number=customer_number,
            whatsapp=whatsapp,
            call_permission_request=call_permission_request,
        )
        answer = await self._request(
            "GET", "otpcall", expect="success", query=query, idempotent=False
        )
        return OtpCallResult.model_validate(answer)

    # --- notifications ---------------------------------------------------------------

    async def register_notifications(self, numbers: Sequence[str] | None = None) -> MessageResult:
        """``POST .../notifications {"knowlarity_number": [..]}`` (default: KNOWLARITY_NUMBER)."""
        chosen = list(numbers) if numbers else [_pick(None, self.config.k_number, *_KN)]
        body = {"knowlarity_number": validation.numbers(chosen, "knowlarity_number")}
        answer = await self._request(
            "POST", "notifications", expect="message", body=body, idempotent=False
        )
        return MessageResult.model_validate(answer)

    async def set_notifications(
        self, enable: bool, knowlarity_number: str | None = None
    ) -> MessageResult:
        """``PUT .../notifications {"knowlarity_number": .., "enable": "enable"|"disable"}``"""
        body = {
            "knowlarity_number": validation.e164(
                _pick(knowlarity_number, self.config.k_number, *_KN), "knowlarity_number"
            ),
            "enable": "enable" if enable else "disable",
        }
        answer = await self._request(
            "PUT", "notifications", expect="message", body=body, idempotent=False
        )
        return MessageResult.model_validate(answer)

    async def notification_pages(
        self, knowlarity_number: str | None = None, enabled: bool | None = None
    ) -> AsyncGenerator[NotificationList, None]:
        """``GET .../notifications``, one answer per page, following ``meta.next``."""
        filters = notifications_filters(knowlarity_number, enabled)
        paging: dict[str, str] = {}
        seen: set[tuple[tuple[str, str], ...]] = set()
        for _ in range(_MAX_PAGES):
            answer = await self._request(
                "GET",
                "notifications",
                expect="objects",
                query=encode_query([*filters, *paging.items()]),
                idempotent=True,
            )
            page = NotificationList.model_validate(answer)
            yield page
            following = next_page(page.meta, paging, len(page.objects))
            if following is None or not page.objects:
                return
            key = tuple(sorted(following.items()))
            if key in seen:
                log.warning("notifications list: meta.next repeats a page; stopping there")
                return
            seen.add(key)
            paging = following
        log.warning("notifications list: stopped after %d pages", _MAX_PAGES)

    async def list_notifications(
        self, knowlarity_number: str | None = None, enabled: bool | None = None
    ) -> NotificationList:
        """Every registration, all pages merged into one list."""
        objects: list[NotificationRegistration] = []
        async for page in self.notification_pages(knowlarity_number, enabled):
            objects.extend(page.objects)
        count = len(objects)
        meta = PageMeta(limit=count, next=None, offset=0, previous=None, total_count=count)
        return NotificationList(meta=meta, objects=objects)

    # --- live events -----------------------------------------------------------------

    @property
    def stream_connected(self) -> bool:
        return self._stream_connected

    @property
    def stream_url_redacted(self) -> str:
        return f"{self.config.notifications_url.rstrip('/')}/update-stream/{_MASK}/konnect"

    async def events(self) -> AsyncGenerator[KonnectEvent, None]:
        """Live events from ``/update-stream/{SR_API_KEY}/konnect``, forever.

        Reconnects after any failure with capped exponential backoff and jitter, closing
        the old connection first, and resumes with ``Last-Event-ID`` when the server sends
        ids. Only one stream may be open per client. Stop it by closing the iterator
        (``contextlib.aclosing``) or cancelling the task that iterates it.
        """
        sr_key = self.config.sr_api_key
        if not sr_key:
            raise ConfigError("KNOWLARITY_SR_API_KEY is not set: the konnect stream needs it")
        if self._streaming:
            raise RuntimeError("a konnect event stream is already open on this client")
        self._streaming = True
        url = f"{self.config.notifications_url.rstrip('/')}/update-stream/"
        url += f"{quote(sr_key, safe='')}/konnect"
        failures = 0
        try:
            while True:
                parser = KonnectFramer()
                self._unparsed_logged, self._json_lines_noted = 0, False
                delivered = False
                try:
                    async with self._http.stream(
                        "GET", url, headers=self._stream_headers(), timeout=self._stream_timeout
                    ) as response:
                        if response.status_code != 200:
                            text = (await _read_some(response, 300)).decode("utf-8", "replace")
                            stream_log.warning(
                                "konnect stream %s refused: HTTP %d %s",
                                self.stream_url_redacted,
                                response.status_code,
                                self._redact(" ".join(text.split())),
                            )
                        else:
                            self._stream_connected = True
                            stream_log.info(
                                "konnect stream connected: %s", self.stream_url_redacted
                            )
                            async for chunk in response.aiter_bytes():
                                for payload in parser.feed(chunk):
                                    delivered = True
                                    yield self._event(payload, parser)
                                self._log_unparsed(parser)
                            for payload in parser.close():
                                yield self._event(payload, parser)
                            self._log_unparsed(parser)
                            stream_log.info("konnect stream closed by the server")
                except httpx.TimeoutException:
                    stream_log.warning(
                        "konnect stream: nothing received for %.0fs (or connect timed out)",
                        self.config.stream_idle_timeout_s,
                    )
                except (httpx.HTTPError, httpx.StreamError) as exc:
                    stream_log.warning("konnect stream dropped: %s", self._describe(exc))
                finally:
                    self._stream_connected = False
                    if parser.sse.last_event_id is not None:
                        self._last_event_id = parser.sse.last_event_id
                    if parser.sse.retry_ms is not None:
                        self._server_retry_s = parser.sse.retry_ms / 1000
                if delivered:
                    failures = 0
                failures += 1
                reconnect = RetryPolicy(
                    base_s=self._server_retry_s or self.config.stream_backoff_initial_s,
                    cap_s=self.config.stream_backoff_max_s,
                    jitter="equal",
                )
                delay = reconnect.backoff(failures, self._rand)
                stream_log.info("konnect stream: reconnecting in %.2fs", delay)
                await self._sleep(delay)
        finally:
            self._streaming = False
            self._stream_connected = False

    def _event(self, payload: str, framer: KonnectFramer) -> KonnectEvent:
        if framer.json_lines and not self._json_lines_noted:
            self._json_lines_noted = True  # once per connection
            stream_log.info("konnect stream sends bare JSON lines (not SSE): reading them")
        event = parse_event(payload)
        if isinstance(event, UnknownEvent) and event.raw_data is not None:
            framer.unparsed.append(f"not a JSON object: {_trim(payload)}")
        return event

    def _log_unparsed(self, framer: KonnectFramer) -> None:
        """Everything that was no event is logged: the first few per connection, then one
        in a hundred (a broken stream must not flood the log)."""
        for what in framer.take_unparsed():
            self._unparsed_logged += 1
            count = self._unparsed_logged
            if count <= _LOGGED_UNPARSED or count % 100 == 0:
                stream_log.warning("konnect stream: skipped %s (#%d)", self._redact(what), count)

    def _stream_headers(self) -> dict[str, str]:
        headers = {"accept": "text/event-stream", "cache-control": "no-cache"}
        if self._last_event_id:
            headers["last-event-id"] = self._last_event_id
        return headers

    # --- transport ---------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        expect: Expect,
        body: dict[str, Any] | None = None,
        query: str = "",
        idempotent: bool,
    ) -> Any:
        if not (self.config.api_key and self.config.sr_api_key):
            raise ConfigError(
                "KNOWLARITY_API_KEY and KNOWLARITY_SR_API_KEY must be set to use the KPI API"
            )
        url = f"{self._api_root}/{path}" + (f"?{query}" if query else "")
        headers = {
            "x-api-key": self.config.api_key,
            "authorization": self.config.sr_api_key,  # the bare SR key, no "Bearer"
            "content-type": "application/json",
        }
        content = None if body is None else json.dumps(body).encode()
        retries = self.config.retries
        attempt = 0
        while True:
            attempt += 1
            cause: Exception | None = None
            try:
                response = await self._http.request(
                    method, url, headers=headers, content=content, timeout=self._timeout
                )
            except _NEVER_SENT as exc:
                cause, retry = exc, attempt <= retries
                failure = KnowlarityTransportError(
                    f"could not connect to Knowlarity: {self._describe(exc)}",
                    maybe_sent=False,
                    timed_out=isinstance(exc, httpx.TimeoutException),
                    attempts=attempt,
                )
            except httpx.TimeoutException as exc:
                # Sent, maybe processed: only a read may be repeated.
                cause, retry = exc, idempotent and attempt <= retries
                failure = KnowlarityTransportError(
                    f"Knowlarity did not answer within {self.config.timeout_s:g}s"
                    + ("" if idempotent else _MAYBE_DONE),
                    maybe_sent=True,
                    timed_out=True,
                    attempts=attempt,
                )
            except httpx.HTTPError as exc:
                cause, retry = exc, idempotent and attempt <= retries
                failure = KnowlarityTransportError(
                    f"the connection to Knowlarity failed: {self._describe(exc)}"
                    + ("" if idempotent else _MAYBE_DONE),
                    maybe_sent=True,
                    attempts=attempt,
                )
            else:
                status = response.status_code
                if not (idempotent and status in _RETRY_STATUSES and attempt <= retries):
                    return check_response(status, response.text, expect)
                failure = KnowlarityTransportError(f"HTTP {status}", maybe_sent=True)
                retry = True
            if not retry:
                raise failure from cause
            delay = self._request_retry.backoff(attempt, self._rand)
            log.warning(
                "%s %s: %s; retry %d of %d in %.2fs",
                method,
                path,
                failure.message,
                attempt,
                retries,
                delay,
            )
            await self._sleep(delay)

    def _describe(self, exc: BaseException) -> str:
        return self._redact(str(exc) or type(exc).__name__)

    def _redact(self, text: str) -> str:
        return redact(text, self.config.secrets)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Loading the CA bundle takes tens of ms; one context serves every client.
    return httpx.create_ssl_context()


_LOGGED_UNPARSED = 5


def _trim(text: str, limit: int = 80) -> str:
    shown = repr(text[:limit])
    return shown if len(text) <= limit else f"{shown}… (+{len(text) - limit} chars)"


_MAYBE_DONE = "; it may have been processed (a call may have been placed), so it was not retried"


async def _read_some(response: httpx.Response, limit: int) -> bytes:
    """At most about ``limit`` bytes of a body (an error page may be large or endless)."""
    data = b""
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) >= limit:
            break
    return data[:limit]


_KN = ("knowlarity_number", "KNOWLARITY_NUMBER")


def _pick(value: str | None, default: str | None, field: str, setting: str) -> str:
    """The given value, else the configured default; a clear error when neither is set."""
    chosen = value if value is not None and value.strip() else default
    if chosen is None or not chosen.strip():
        raise InputError(field, f"not given, and {setting} is not set")
    return chosen
