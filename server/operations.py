"""What operators get beside the calls: records, metrics and traces, wired to the event hub.

Started and stopped by the app's lifespan. Each part is optional (RECORDS_ENABLED,
METRICS_ENABLED, OTEL_EXPORTER_OTLP_ENDPOINT) and each only listens to the call events.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from config.logs import get_logger
from config.settings import Settings
from kpi.service import KpiService
from pipeline.call_record import CallRecord
from records.store import RecordStore
from records.writer import RecordWriter
from server.metered import Metering
from server.metrics import CallMetrics
from server.state import AppState
from server.tracing import CallTracer, build_tracer

log = get_logger("SERVER")

MIGRATE_TIMEOUT_S = 20.0
SAMPLE_EVERY_S = 1.0  # readiness, CPU, RSS of this process: fresh for every scrape
FLUSH_TIMEOUT_S = 5.0


@dataclass(slots=True)
class Operations:
    metrics: CallMetrics | None = None
    store: RecordStore | None = None
    records: RecordWriter | None = None
    tracer: CallTracer | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def aclose(self) -> None:
        """After the calls: flush records, stop the sampler, flush traces."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.records is not None:
            await self.records.aclose(FLUSH_TIMEOUT_S)
        if self.store is not None:
            await self.store.aclose()
        if self.tracer is not None:
            await self.tracer.aclose()
        if self.metrics is not None:
            self.metrics.close()


async def start_operations(
    settings: Settings, state: AppState, kpi: KpiService, is_ready: Readiness
) -> Operations:
    ops = Operations()
    if settings.telemetry.metrics_enabled:
        metrics = ops.metrics = CallMetrics()
        metrics.forget_dead_processes()
        metering = Metering(metrics.provider_request)
        state.providers = metering.providers(state.providers)
        state.setups = {  # every call language's providers, shared ones wrapped once
            code: dataclasses.replace(setup, providers=metering.providers(setup.providers))
            for code, setup in state.setups.items()
        }
        state.events.add_listener(metrics.listener)
        ops._tasks.append(asyncio.create_task(_sample(metrics, is_ready), name="metrics-sampler"))
    if settings.records.enabled:
        ops.store, ops.records = await _start_records(settings, ops.metrics)
        state.events.add_listener(ops.records.listener)
        kpi.add_match_listener(_cdr_forwarder(ops.records))
    ops.tracer = build_tracer(settings)
    if ops.tracer is not None:
        state.events.add_listener(ops.tracer.listener)
    return ops


class Readiness:
    """Whether the process takes new calls now (what ``/ready`` answers)."""

    def __init__(self, state: AppState) -> None:
        self._state = state

    def status(self) -> str:
        state = self._state
        if state.lifecycle.draining:
            return "draining"
        if state.missing():
            return "unavailable"  # a stage has no provider: calls would only hear an apology
        if not (state.greeting_warmed.is_set() and state.connections_warmed.is_set()):
            return "warming"  # the first calls would pay a TTS round trip for the greeting
        if state.lifecycle.calls.connections >= state.settings.stream.max_calls:
            return "full"
        return "ready"

    def __call__(self) -> bool:
        return self.status() == "ready"


async def _start_records(
    settings: Settings, metrics: CallMetrics | None
) -> tuple[RecordStore, RecordWriter]:
    store = RecordStore(settings.records.url)
    migrate_later = False
    if settings.records.migrate_on_start:
        try:
            async with asyncio.timeout(MIGRATE_TIMEOUT_S):
                await store.upgrade()
        except Exception as exc:
            migrate_later = True
            log.error(
                "Records database %s not ready at start-up (%s); calls go on, the writer "
                "keeps retrying",
                store.display_url,
                f"{type(exc).__name__}: {exc}".splitlines()[0][:200],
            )
    writer = RecordWriter(
        store,
        mask_numbers=settings.records.mask_numbers,
        queue_size=settings.records.queue_size,
        retention_days=settings.records.retention_days,
        migrate=migrate_later,
        on_written=None if metrics is None else metrics.records_written.inc,
        on_dropped=None if metrics is None else metrics.records_dropped.inc,
    )
    writer.start()
    log.info("Call records go to %s", store.display_url)
    return store, writer


def _cdr_forwarder(writer: RecordWriter) -> Callable[[CallRecord], None]:
    def forward(record: CallRecord) -> None:
        writer.on_cdr(record.call_id, record.recording_url, list(record.provider_events))

    return forward


async def _sample(metrics: CallMetrics, is_ready: Readiness) -> None:
    while True:
        metrics.sample_process(ready=is_ready())
        await asyncio.sleep(SAMPLE_EVERY_S)
