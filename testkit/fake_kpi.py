"""A protocol-faithful fake of Knowlarity's account API (kpi.knowlarity.com) and of its
konnect live-event stream, served by uvicorn in-process on a loopback socket.

What it follows from the API reference: the paths ``/{channel}/v1/account/call/makecall``,
``/otpcall``, ``/notifications`` (POST register, PUT enable/disable, GET list with
tastypie ``meta``/``objects`` paging) and ``/update-stream/{SR_API_KEY}/konnect``; the
headers ``x-api-key`` and ``authorization`` (the bare SR key); the success and error
bodies, including errors answered with HTTP 200 (a Do-Not-Call number on makecall).

Tests drive it through the real httpx client and inspect ``requests`` (every request,
with its raw query string and body) and ``placed_calls``. They can script answers per
endpoint (:class:`Reply`: status, JSON or raw bytes, a delay to force client timeouts)
and the stream (:class:`FakeKonnect`: events split into chunks, comments, CRLF, a
connection dropped mid-event, ``Last-Event-ID`` replay).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import re
import uuid
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from testkit._service import Service
from testkit.http import AppServer

if TYPE_CHECKING:
    from config.settings import Settings
    from kpi.client import KpiConfig

CHANNELS = ("Basic", "Advance", "Premium", "Enterprise")
# Numbers the helpers below configure (E.164, shaped like the reference's examples).
K_NUMBER = "+911140000000"
AGENT_NUMBER = "+919810000001"
_NUMBER = re.compile(r"\+[0-9]{8,15}")
_AUTH_WRONG = "Client name, authorization or knowlarity number is wrong."


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query_string: str  # exactly as sent, percent-encoding intact
    headers: Mapping[str, str]  # lower-case names
    body: bytes

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(self.query_string, keep_blank_values=True))

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass(frozen=True)
class Reply:
    """A scripted answer. Unset fields keep the fake's normal behaviour, so
    ``Reply(delay_s=2)`` still places the call at once but answers late."""

    status: int | None = None
    json: Any = None
    raw: bytes | str | None = None  # an exact body, e.g. the reference's broken JSON
    delay_s: float = 0.0
    content_type: str = "application/json"


@dataclass
class _Frame:
    pieces: list[bytes]
    event_id: str | None = None
    whole: bytes = b""
    then: str | None = None  # "drop" (abort the connection) or "end" (close cleanly)


class _DeliberateDrop(Exception):
    """Raised in the stream body to cut the connection without a final chunk."""


class _HideDeliberateDrops(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not _contains_drop(error)


def _contains_drop(error: BaseException | None) -> bool:
    if isinstance(error, _DeliberateDrop):
        return True
    if isinstance(error, BaseExceptionGroup):
        return any(_contains_drop(e) for e in error.exceptions)
    return False


class FakeKonnect:
    """The live-event stream. Frames queued here go to the open connection, in order."""

    def __init__(self, closing: asyncio.Event) -> None:
        self._closing = closing
        self._frames: deque[_Frame] = deque()
        self._arrived = asyncio.Event()
        self._refusals: deque[Reply] = deque()
        self.history: list[tuple[str, bytes]] = []  # (id, event bytes) for Last-Event-ID replay
        self.connections: list[RecordedRequest] = []
        self.open_streams = 0
        self.max_open_streams = 0

    # --- scripting -----------------------------------------------------------------------

    def send_event(
        self,
        payload: Mapping[str, Any] | str,
        *,
        id: str | None = None,
        event: str | None = None,
        chunk_size: int | None = None,
        newline: str = "\n",
        space: bool = True,
        pretty: bool = False,
        drop_after: int | None = None,
    ) -> bytes:
        """Queue one event. ``chunk_size`` splits its bytes into separate writes;
        ``pretty`` spreads the JSON over several ``data:`` lines; ``drop_after`` sends only
        that many bytes and then cuts the connection (the event stays in the replay
        history). Returns the encoded event."""
        if isinstance(payload, str):
            data = payload
        else:
            data = json.dumps(payload, indent=2 if pretty else None, ensure_ascii=False)
        prefix = ": " if space else ":"
        lines = []
        if event is not None:
            lines.append(f"event{prefix}{event}")
        if id is not None:
            lines.append(f"id{prefix}{id}")
        lines.extend(f"data{prefix}{line}" for line in data.split("\n"))
        whole = (newline.join(lines) + newline + newline).encode()
        sent = whole if drop_after is None else whole[:drop_after]
        self._queue(
            _Frame(
                pieces=_split(sent, chunk_size),
                event_id=id,
                whole=whole,
                then="drop" if drop_after is not None else None,
            )
        )
        return whole

    def send_raw(self, data: bytes | str, *, chunk_size: int | None = None) -> None:
        raw = data.encode() if isinstance(data, str) else data
        self._queue(_Frame(pieces=_split(raw, chunk_size)))

    def send_comment(self, text: str = "keep-alive") -> None:
        self.send_raw(f": {text}\n\n")

    def drop(self) -> None:
        """Cut the open connection abruptly (no terminating chunk)."""
        self._queue(_Frame(pieces=[], then="drop"))

    def end(self) -> None:
        """Close the open response cleanly, as a server restart might."""
        self._queue(_Frame(pieces=[], then="end"))

    def refuse(self, status: int = 503, body: str = "Service Unavailable", times: int = 1) -> None:
        """Answer the next ``times`` connections with an error status."""
        for _ in range(times):
            self._refusals.append(Reply(status=status, raw=body, content_type="text/plain"))

    # --- serving ---------------------------------------------------------------------------

    def _connect(self, record: RecordedRequest, *, key_ok: bool) -> Response:
        self.connections.append(record)
        if not key_ok:
            return Response("Invalid SR API key", 401, media_type="text/plain")
        if self._refusals:
            refusal = self._refusals.popleft()
            return Response(refusal.raw, refusal.status or 503, media_type=refusal.content_type)
        resume_after = record.headers.get("last-event-id")
        return StreamingResponse(
            self._body(resume_after),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache"},
        )

    def _queue(self, frame: _Frame) -> None:
        self._frames.append(frame)
        self._arrived.set()

    async def _body(self, resume_after: str | None) -> AsyncIterator[bytes]:
        self.open_streams += 1
        self.max_open_streams = max(self.max_open_streams, self.open_streams)
        frame: _Frame | None = None
        started = False
        try:
            ids = [event_id for event_id, _ in self.history]
            if resume_after is not None and resume_after in ids:
                for _, whole in self.history[ids.index(resume_after) + 1 :]:
                    yield whole
            while True:
                frame, started = await self._next_frame(), False
                if frame is None:
                    return
                if frame.event_id is not None:
                    self.history.append((frame.event_id, frame.whole))
                for piece in frame.pieces:
                    started = True
                    yield piece
                    await asyncio.sleep(0.001)  # let each piece leave as its own write
                if frame.then == "drop":
                    raise _DeliberateDrop
                if frame.then == "end":
                    return
                frame = None
        finally:
            self.open_streams -= 1
            if frame is not None and not started and frame.pieces:
                # Taken by a connection that went away before writing it: the next
                # connection gets it (the history entry is redone then).
                if frame.event_id is not None and self.history[-1:] == [
                    (frame.event_id, frame.whole)
                ]:
                    self.history.pop()
                self._queue_front(frame)

    def _queue_front(self, frame: _Frame) -> None:
        self._frames.appendleft(frame)
        self._arrived.set()

    async def _next_frame(self) -> _Frame | None:
        while not self._frames:
            if self._closing.is_set():
                return None
            self._arrived.clear()
            waiter = asyncio.ensure_future(self._arrived.wait())
            closing = asyncio.ensure_future(self._closing.wait())
            try:
                await asyncio.wait({waiter, closing}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                closing.cancel()
        return self._frames.popleft()


class FakeKpi(Service):
    """The fake server. ``async with FakeKpi() as fake:`` then point the client at
    ``fake.base_url`` (KPI) and ``fake.notifications_url`` (konnect)."""

    def __init__(
        self,
        *,
        api_key: str = "fake-application-access-key-0001",
        sr_api_key: str = "fake-sr-api-key-3f9c2b7a",
        port: int = 0,
        page_size: int = 20,
        dnd_numbers: tuple[str, ...] = (),
    ) -> None:
        self.api_key = api_key
        self.sr_api_key = sr_api_key
        self.page_size = page_size
        self.dnd_numbers = set(dnd_numbers)
        self.requests: list[RecordedRequest] = []
        self.placed_calls: list[dict[str, str]] = []
        self.registrations: list[dict[str, Any]] = []
        self._scripts: defaultdict[tuple[str, str], deque[Reply]] = defaultdict(deque)
        self._closing = asyncio.Event()
        self.konnect = FakeKonnect(self._closing)
        self._ids = itertools.count(1001)
        self._log_filter = _HideDeliberateDrops()
        self.app = Starlette(
            routes=[
                Route(
                    "/{path:path}",
                    self._handle,
                    methods=["GET", "POST", "PUT", "DELETE", "PATCH"],
                )
            ]
        )
        self._http = AppServer(self.app, port=port)

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._http.port

    @property
    def base_url(self) -> str:
        return self._http.base_url

    @property
    def notifications_url(self) -> str:
        return self._http.base_url

    async def start(self) -> None:
        logging.getLogger("uvicorn.error").addFilter(self._log_filter)
        await self._http.start()

    async def stop(self) -> None:
        self._closing.set()  # ends open streams and pending delays
        await self._http.stop()
        logging.getLogger("uvicorn.error").removeFilter(self._log_filter)

    # --- scripting and inspection ------------------------------------------------------------

    def script(self, method: str, endpoint: str, *replies: Reply) -> None:
        """Answer the next requests to ``endpoint`` (e.g. "call/makecall", "otpcall",
        "notifications") with these replies, in order."""
        self._scripts[(method.upper(), endpoint)].extend(replies)

    def requests_to(self, endpoint: str, method: str | None = None) -> list[RecordedRequest]:
        suffix = f"/v1/account/{endpoint}"
        return [
            r
            for r in self.requests
            if r.path.endswith(suffix) and (method is None or r.method == method.upper())
        ]

    def client_config(self, **overrides: Any) -> KpiConfig:
        """A client config aimed at this fake, with short timeouts and backoffs."""
        from kpi.client import KpiConfig

        values: dict[str, Any] = {
            "api_key": self.api_key,
            "sr_api_key": self.sr_api_key,
            "base_url": self.base_url,
            "notifications_url": self.notifications_url,
            "k_number": K_NUMBER,
            "agent_number": AGENT_NUMBER,
            "timeout_s": 2.0,
            "connect_timeout_s": 1.0,
            "retries": 2,
            "retry_backoff_s": 0.001,
            "stream_idle_timeout_s": 5.0,
            "stream_backoff_initial_s": 0.01,
            "stream_backoff_max_s": 0.05,
        }
        values.update(overrides)
        return KpiConfig(**values)

    def settings_env(self) -> dict[str, str]:
        """The environment that points Settings (and the CLI) at this fake."""
        return {
            "KNOWLARITY_API_KEY": self.api_key,
            "KNOWLARITY_SR_API_KEY": self.sr_api_key,
            "KNOWLARITY_BASE_URL": self.base_url,
            "KNOWLARITY_NOTIFICATIONS_URL": self.notifications_url,
            "KNOWLARITY_NUMBER": K_NUMBER,
            "KNOWLARITY_AGENT_NUMBER": AGENT_NUMBER,
            "KNOWLARITY_TIMEOUT_S": "2",
            "KNOWLARITY_CONNECT_TIMEOUT_S": "1",
            "KNOWLARITY_RETRY_BACKOFF_S": "0.001",
            "KNOWLARITY_STREAM_BACKOFF_INITIAL_S": "0.01",
            "KNOWLARITY_STREAM_BACKOFF_MAX_S": "0.05",
        }

    def settings(self, **overrides: Any) -> Settings:
        """Settings aimed at this fake; the process environment and .env are not read."""
        from config.settings import Settings

        values: dict[str, Any] = {k.lower(): v for k, v in self.settings_env().items()}
        values.update(overrides)
        return Settings.model_validate(values)

    def register(self, number: str, *, enable: bool = True) -> dict[str, Any]:
        """Add a registration directly (as if registered earlier)."""
        entry = _registration(next(self._ids), number, enable)
        self.registrations.append(entry)
        return entry

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
        await eventually(predicate, timeout_s)

    # --- the API -----------------------------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        record = RecordedRequest(
            method=request.method,
            path=request.url.path,
            query_string=request.scope["query_string"].decode("latin-1"),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=await request.body(),
        )
        self.requests.append(record)
        stream = re.fullmatch(r"/update-stream/([^/]+)/konnect", record.path)
        if stream is not None and record.method == "GET":
            return self.konnect._connect(record, key_ok=stream.group(1) == self.sr_api_key)
        api = re.fullmatch(r"/([^/]+)/v1/account/(.+?)/?", record.path)
        if api is None or api.group(1) not in CHANNELS:
            return JSONResponse({"message": "Not Found"}, 404)
        endpoint = api.group(2)
        default = self._default(record, endpoint)
        scripted = self._scripts.get((record.method, endpoint))
        if not scripted:
            return default
        reply = scripted.popleft()
        if reply.delay_s:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), reply.delay_s)
        status = reply.status if reply.status is not None else default.status_code
        if reply.raw is not None:
            return Response(reply.raw, status, media_type=reply.content_type)
        if reply.json is not None:
            return JSONResponse(reply.json, status)
        return Response(default.body, status, media_type=default.media_type)

    def _default(self, record: RecordedRequest, endpoint: str) -> Response:
        authorized = (
            record.headers.get("x-api-key") == self.api_key
            and record.headers.get("authorization") == self.sr_api_key
        )
        route = (record.method, endpoint)
        if route == ("POST", "call/makecall"):
            if not authorized:
                return _error("Invalid API key for this SR number", 401)
            return self._makecall(record)
        if route == ("GET", "otpcall"):
            if not authorized:
                return _error("Invalid API key for this SR number", 401)
            return self._otpcall(record)
        if endpoint == "notifications" and record.method in ("GET", "POST", "PUT"):
            if not authorized:
                return JSONResponse({"message": _AUTH_WRONG}, 401)
            if record.method == "POST":
                return self._register(record)
            if record.method == "PUT":
                return self._enable(record)
            return self._list(record)
        return JSONResponse({"message": "Not Found"}, 404)

    def _makecall(self, record: RecordedRequest) -> Response:
        body = _json_object(record.body)
        missing = [f for f in ("k_number", "agent_number", "customer_number") if not body.get(f)]
        if missing:
            return _error(f"Missing required field(s): {', '.join(missing)}", 400)
        customer = str(body["customer_number"])
        if customer in self.dnd_numbers:
            # Knowlarity reports this in an error body; the fake answers it with HTTP 200
            # so clients are exercised on errors that come with a success status.
            return _error(f"Call Failed! Number {customer} in Do Not Call registry.", 200)
        self.placed_calls.append({k: str(v) for k, v in body.items()})
        return JSONResponse(
            {"success": {"status": "success", "message": "Call successfully placed"}}
        )

    def _otpcall(self, record: RecordedRequest) -> Response:
        query = record.query
        missing = [f for f in ("ivr_id", "k_number", "customer_number") if not query.get(f)]
        if missing:
            return _error(f"Missing required parameter(s): {', '.join(missing)}", 400)
        call_id = str(uuid.uuid4())
        self.placed_calls.append({"otp_call_id": call_id, **query})
        return JSONResponse(
            {
                "success": {
                    "call_id": call_id,
                    "message": "OTP call initiated successfully",
                    "status": "initiated",
                }
            }
        )

    def _register(self, record: RecordedRequest) -> Response:
        numbers = _json_object(record.body).get("knowlarity_number")
        if not isinstance(numbers, list) or not numbers:
            return JSONResponse({"error": {"knowlarity_number": "This field is required."}}, 400)
        for number in numbers:
            if not isinstance(number, str) or not _NUMBER.fullmatch(number):
                message = f"The knowlarity number({number}) or API key is invalid."
                return JSONResponse({"error": {"knowlarity_number": message}}, 400)
        for number in numbers:
            if not any(r["k_number"] == number for r in self.registrations):
                self.register(number)
        return JSONResponse({"message": "Successfully registered."})

    def _enable(self, record: RecordedRequest) -> Response:
        body = _json_object(record.body)
        number, toggle = body.get("knowlarity_number"), body.get("enable")
        matches = [r for r in self.registrations if r["k_number"] == number]
        if not matches or toggle not in ("enable", "disable"):
            return JSONResponse({"message": _AUTH_WRONG}, 401)
        for entry in matches:
            entry["enable"] = toggle == "enable"
        return JSONResponse({"message": f"Successfully {toggle}d."})

    def _list(self, record: RecordedRequest) -> Response:
        query = record.query
        rows = self.registrations
        if "knowlarity_number" in query:
            rows = [r for r in rows if r["k_number"] == query["knowlarity_number"]]
        if "enabled" in query:
            wanted = query["enabled"].lower() == "true"
            rows = [r for r in rows if r["enable"] is wanted]
        limit = int(query.get("limit", self.page_size))
        offset = int(query.get("offset", 0))
        page = rows[offset : offset + limit]
        filters = {k: v for k, v in query.items() if k in ("knowlarity_number", "enabled")}

        def link(at: int) -> str:
            channel = record.path.split("/")[1]
            params = urlencode({**filters, "limit": limit, "offset": at})
            return f"/{channel}/v1/account/notifications?{params}"

        meta = {
            "limit": limit,
            "next": link(offset + limit) if offset + limit < len(rows) else None,
            "offset": offset,
            "previous": link(max(0, offset - limit)) if offset > 0 else None,
            "total_count": len(rows),
        }
        return JSONResponse({"meta": meta, "objects": page})


async def eventually(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait until ``predicate()`` holds (checked every few ms); TimeoutError after
    ``timeout_s``. For state that has no event to wait on, e.g. a client's."""
    step = 0.005
    for _ in range(max(1, int(timeout_s / step))):
        if predicate():
            return
        await asyncio.sleep(step)
    if not predicate():
        raise TimeoutError(f"condition not met within {timeout_s}s")


def _registration(id_: int, number: str, enable: bool) -> dict[str, Any]:
    # The shape of one List Registrations object in the reference, credentials included
    # (a CRM integration's key and login, the integration's Knowlarity key).
    return {
        "app_api_key": f"crm-api-key-{id_}",
        "app_data": json.dumps({"username": "admin", "password": f"crm-password-{id_}"}),
        "app_type": {"id": 7, "name": "KONNECT", "resource_uri": "/api/v1/applications/7"},
        "app_url": "",
        "date_updated": "2015-08-06T12:33:56",
        "enable": enable,
        "expired": False,
        "id": id_,
        "k_api_key": f"k-api-{id_}",
        "k_number": number,
        "k_number_cc": "IN",
        "konnect_api_client": None,
        "product": "SR",
        "resource_uri": f"/api/v1/integrations/{id_}",
        "user": {"id": 42, "resource_uri": "/api/v1/users/42", "username": "SR"},
    }


def _error(message: str, status: int) -> Response:
    return JSONResponse({"error": {"message": message}}, status)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body) if body else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _split(data: bytes, size: int | None) -> list[bytes]:
    if not data:
        return []
    if size is None or size <= 0:
        return [data]
    return [data[i : i + size] for i in range(0, len(data), size)]
