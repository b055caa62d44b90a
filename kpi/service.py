"""The server side of the adapter: the shared client, the background konnect consumer, a
ring buffer of recent events, and matching of CDR/HANGUP events to this server's calls.

The app's lifespan calls ``await service.start()`` and ``await service.aclose()``; the
service uses the app's shared ``httpx.AsyncClient`` when given one.
Matching is pure (``find_call``/``attach``) so it is tested without sockets.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from contextlib import aclosing
from datetime import UTC, datetime, timedelta, timezone

import httpx

from config.logs import get_logger
from config.settings import KnowlaritySettings
from kpi.client import KnowlarityClient, KpiConfig
from kpi.errors import ConfigError
from kpi.models import CdrEvent, KonnectEvent, RecentEvent, TelephonyEvent, event_kind
from pipeline.call_record import CallRecord, CallRegistry

log = get_logger("KONNECT")

_MIN_SUFFIX_DIGITS = 8
# "2015-11-20 11:50:18+05:30"; the reference also shows the space lost ("2015-11-2011:51:37").
_CDR_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[ T]?(\d{2}):(\d{2}):(\d{2})(\.\d+)?\s*(Z|[+-]\d{2}:?\d{2})?"
)


class KpiService:
    def __init__(
        self,
        settings: KnowlaritySettings,
        registry: CallRegistry,
        *,
        client: KnowlarityClient | None = None,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self._client = client
        self._http = http  # the app's shared client; None: the client makes its own
        self._clock = clock
        self._events: deque[RecentEvent] = deque(maxlen=settings.events_buffer)
        self._task: asyncio.Task[None] | None = None
        self._match_listeners: list[Callable[[CallRecord], None]] = []

    def add_match_listener(self, listener: Callable[[CallRecord], None]) -> None:
        """Told each time a CDR or HANGUP is newly attached to a call (call records)."""
        self._match_listeners.append(listener)

    # --- state -------------------------------------------------------------------------

    @property
    def client(self) -> KnowlarityClient:
        """The shared client for REST calls; ConfigError when the keys are not set."""
        if not self.settings.kpi_configured:
            raise ConfigError(
                "the Knowlarity account API is not configured: "
                "set KNOWLARITY_API_KEY and KNOWLARITY_SR_API_KEY"
            )
        return self._shared_client()

    @property
    def events_configured(self) -> bool:
        return self.settings.konnect_configured

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.stream_connected

    def recent_events(self, limit: int | None = None) -> list[RecentEvent]:
        """The newest ``limit`` events, oldest first."""
        events = list(self._events)
        if limit is None:
            return events
        return events[-limit:] if limit > 0 else []

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Start the konnect consumer if the SR key is set (and events are enabled)."""
        if self._task is not None:
            return  # one consumer, so never two streams
        if not self.settings.konnect_configured:
            log.info(
                "live call events off: set KNOWLARITY_SR_API_KEY "
                "(and KNOWLARITY_EVENTS_ENABLED=true) to consume the konnect stream"
            )
            return
        client = self._shared_client()
        self._task = asyncio.create_task(self._consume(client), name="kpi-konnect-consumer")
        self._task.add_done_callback(_report_stop)

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def _consume(self, client: KnowlarityClient) -> None:
        log.info("consuming live call events from %s", client.stream_url_redacted)
        async with aclosing(client.events()) as events:
            async for event in events:
                try:
                    self.handle_event(event)
                except Exception:  # one odd event must not stop the consumer
                    log.exception("could not handle a konnect event")

    def _shared_client(self) -> KnowlarityClient:
        if self._client is None:
            self._client = KnowlarityClient(KpiConfig.from_settings(self.settings), http=self._http)
        return self._client

    # --- events --------------------------------------------------------------------------

    def handle_event(self, event: KonnectEvent, received_at: float | None = None) -> RecentEvent:
        """Buffer one event; attach a CDR or HANGUP to the matching call of this server."""
        now = self._clock() if received_at is None else received_at
        call_id = None
        if isinstance(event, CdrEvent) or (isinstance(event, TelephonyEvent) and event.is_hangup):
            record = find_call(event, self.registry.recent(), now)
            if record is not None:
                call_id = record.call_id
                if attach(record, event):
                    _log_match(record, event)
                    for listener in self._match_listeners:
                        listener(record)
        recent = RecentEvent(
            kind=event_kind(event),
            name=event.name,
            received_at=now,
            call_id=call_id,
            data=event.raw(),
        )
        self._events.append(recent)
        if call_id is None:
            log.debug("konnect event %s uuid=%s", recent.name or "?", recent.data.get("uuid"))
        return recent


def _report_stop(task: asyncio.Task[None]) -> None:
    # The consumer only ends when cancelled; anything else is a bug worth a loud line.
    if not task.cancelled() and task.exception() is not None:
        log.error("the konnect consumer stopped: %r", task.exception())


# --- matching (pure) ------------------------------------------------------------------


def find_call(
    event: CdrEvent | TelephonyEvent, records: Iterable[CallRecord], received_at: float
) -> CallRecord | None:
    """The call this event is about: the same uuid, else the same number pair with
    overlapping time (the closest start wins)."""
    candidates = list(records)
    uuid = event.uuid
    if uuid:
        for record in reversed(candidates):
            if record.call_id == uuid or any(e.get("uuid") == uuid for e in record.provider_events):
                return record
    business, customers = event_numbers(event)
    if not business or not customers:
        return None
    start, end = event_window(event, received_at)
    best: CallRecord | None = None
    for record in candidates:
        if not same_number(record.virtual_number, business):
            continue
        if not any(same_number(record.customer_number, c) for c in customers):
            continue
        if not record.overlaps(start, end):
            continue
        if best is None or abs(record.started_at - start) < abs(best.started_at - start):
            best = record
    return best


def attach(record: CallRecord, event: CdrEvent | TelephonyEvent) -> bool:
    """Keep the event (and its recording URL) on the call; False if it was already there."""
    data = event.raw()
    if data in record.provider_events:
        return False  # a replay after a reconnect
    record.provider_events.append(data)
    url = event.resource_url if isinstance(event, CdrEvent) else event.call_recording
    if url:
        record.recording_url = url
    return True


def event_numbers(event: CdrEvent | TelephonyEvent) -> tuple[str | None, list[str]]:
    """(our Knowlarity number, the customer's possible numbers) of an event."""
    if isinstance(event, CdrEvent):
        # Incoming: caller_id is the customer; Outgoing: destination is. Accept either.
        others = [n for n in (event.caller_id, event.destination) if n]
        return event.dispnumber, others
    return event.business_number, [event.customer_number] if event.customer_number else []


def event_window(event: CdrEvent | TelephonyEvent, received_at: float) -> tuple[float, float]:
    """When the event's call happened, wall clock; a HANGUP is "now"."""
    if isinstance(event, TelephonyEvent):
        return received_at, received_at
    duration = event.duration_s or 0.0
    start = parse_time(event.start_time, event.timezone_offset)
    end = parse_time(event.end_time, event.timezone_offset)
    if start is None:
        if end is None:
            return received_at - duration, received_at
        return end - duration, end
    return start, end if end is not None else start + duration


def parse_time(value: str | None, offset: str | None = None) -> float | None:
    """Seconds since the epoch of a CDR time; None when it cannot be read or has no zone."""
    if not value:
        return None
    found = _CDR_TIME.search(value)
    if found is None:
        return None
    year, month, day, hour, minute, second = (int(found.group(i)) for i in range(1, 7))
    fraction = float(found.group(7)) if found.group(7) else 0.0
    zone = _zone(found.group(8)) or _zone(offset)
    if zone is None:
        return None
    try:
        moment = datetime(year, month, day, hour, minute, second, tzinfo=zone)
    except ValueError:
        return None
    return moment.timestamp() + fraction


def _zone(text: str | None) -> timezone | None:
    if not text:
        return None
    text = text.strip()
    if text == "Z":
        return UTC
    found = re.fullmatch(r"([+-])(\d{2}):?(\d{2})", text)
    if found is None:
        return None
    delta = timedelta(hours=int(found.group(2)), minutes=int(found.group(3)))
    return timezone(-delta if found.group(1) == "-" else delta)


def same_number(a: str | None, b: str | None) -> bool:
    """Phone numbers equal up to formatting: digits only; a national form matches the
    international one when it is a suffix of at least 8 digits."""
    da = "".join(ch for ch in a or "" if ch.isdigit()).lstrip("0")
    db = "".join(ch for ch in b or "" if ch.isdigit()).lstrip("0")
    if not da or not db:
        return False
    if da == db:
        return True
    short, long = sorted((da, db), key=len)
    return len(short) >= _MIN_SUFFIX_DIGITS and long.endswith(short)


def _log_match(record: CallRecord, event: CdrEvent | TelephonyEvent) -> None:
    extra = {"call_id": record.call_id}
    if isinstance(event, CdrEvent):
        log.info(
            "Knowlarity CDR uuid=%s %s %s duration=%ss recording=%s",
            event.uuid,
            event.call_type or "-",
            event.business_call_type or "-",
            event.call_duration,
            "kept" if event.resource_url else "none",
            extra=extra,
        )
    else:
        log.info(
            "Knowlarity %s uuid=%s direction=%s business_call_type=%s recording=%s",
            event.name,
            event.uuid,
            event.call_direction or "-",
            event.business_call_type or "-",
            "kept" if event.call_recording else "none",
            extra=extra,
        )
