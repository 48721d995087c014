"""Ingest assembled from the fleet's Settings: the telemetry sink, the batch service and the
coordinator, started and stopped together.

Two ways in: ``edgefleet fleet serve`` starts it inside the app's lifespan (so it starts and
stops with the API), and ``edgefleet fleet ingest CONFIG`` runs it alone (:func:`run_ingest`),
e.g. as several processes on one shared subscription.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

from fleet.core.db import Database
from fleet.core.settings import Settings
from fleet.ingest.coordinator import Coordinator
from fleet.ingest.metrics import IngestMetrics
from fleet.ingest.service import BatchResult, Inbound, Ingestor
from fleet.telemetry.embedded import EmbeddedStore, Retention
from fleet.telemetry.sink import TelemetrySink

__all__ = ["IngestProcess", "embedded_store", "open_sink", "run_ingest", "start_in_app"]

log = logging.getLogger(__name__)


def embedded_store(settings: Settings) -> EmbeddedStore | None:
    """The embedded store the settings name, or None when telemetry goes to InfluxDB."""
    t = settings.telemetry
    if t.sink != "embedded":
        return None
    return EmbeddedStore(t.embedded_path or settings.data_dir / "telemetry.db",
                         Retention(raw_s=t.raw_retention_h * 3600,
                                   minute_s=t.minute_retention_d * 86400))


def open_sink(settings: Settings) -> TelemetrySink:
    """The telemetry sink the settings name (the embedded store by default)."""
    store = embedded_store(settings)
    if store is not None:
        return store
    t = settings.telemetry
    from fleet.telemetry.influx import InfluxSink

    return InfluxSink(t.influx_url, t.influx_token.get_secret_value(), t.influx_org,
                      t.influx_bucket)


class IngestProcess:
    """One replica's ingest: owns its sink and its coordinator (the database is shared)."""

    def __init__(self, settings: Settings, db: Database, *,
                 metrics: IngestMetrics | None = None,
                 on_commit: Callable[[BatchResult], None] | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or IngestMetrics()
        self.sink = open_sink(settings)
        self.ingestor = Ingestor(db, self.sink, metrics=self.metrics,
                                 touch_interval_s=settings.ingest.touch_interval_s,
                                 reject_log_interval_s=settings.ingest.reject_log_interval_s)
        self._on_commit = on_commit
        self.db = db
        self.coordinator = Coordinator(settings.ingest, self._process, self.metrics)
        self._stop = threading.Event()
        self._commands: threading.Thread | None = None

    def _process(self, batch: list[Inbound]) -> BatchResult:
        result = self.ingestor.process(batch)
        if self._on_commit is not None:
            self._on_commit(result)
        return result

    def start(self) -> None:
        log.info("ingest starting: broker %s:%d, share group %r, sink %s",
                 self.settings.ingest.host, self.settings.ingest.port,
                 self.settings.ingest.share_group, self.settings.telemetry.sink)
        self._stop.clear()
        self.coordinator.start()
        self._commands = threading.Thread(target=self._send_commands, name="ingest-commands",
                                          daemon=True)
        self._commands.start()

    def stop(self) -> None:
        self._stop.set()
        if self._commands is not None:
            self._commands.join(15)
        self.coordinator.stop()
        self.sink.close()
        log.info("ingest stopped")

    def _send_commands(self) -> None:
        """Publish the commands the API queued (fleet.control) to their gateways' cmd/ topics.
        Each pass claims a batch through the database (so of several replicas exactly one
        publishes a command), publishes until the claim's lease could run out, marks sent what
        the broker acknowledged and gives back the rest for the next pass."""
        import time

        from fleet.control.service import claim, mark_sent, new_claimer, publish_deadline, release
        from fleet.ota.service import wire_fields

        wire = {"ota": wire_fields(self.settings)}

        claimer = new_claimer()
        publish_timeout_s = 10.0
        while not self._stop.wait(self.settings.ingest.command_poll_s):
            if not self.coordinator.wait_subscribed(0):
                continue
            try:
                with self.db.transaction() as session:
                    outgoing = claim(session, claimer, wire=wire)
                if not outgoing:
                    continue
                deadline = publish_deadline(time.monotonic(), publish_timeout_s)
                sent: list[int] = []
                for o in outgoing:
                    if self._stop.is_set() or time.monotonic() > deadline:
                        break
                    if self.coordinator.publish(o.topic, o.payload, publish_timeout_s):
                        sent.append(o.id)
                with self.db.transaction() as session:
                    mark_sent(session, claimer, sent)
                    release(session, claimer, [o.id for o in outgoing if o.id not in sent])
                if sent:
                    log.info("published %d command(s) to gateways", len(sent))
            except Exception:  # the database is down: try again next round
                log.exception("publishing commands failed; retrying")


def start_in_app(settings: Settings, db: Database, metrics: IngestMetrics,
                 poke_alarms: Callable[[], None]) -> IngestProcess | None:
    """Start ingest inside the app's lifespan (None when no broker is configured).

    Called on the event loop; ``poke_alarms`` (the live-push feed's wake-up) is scheduled onto
    that loop after a batch that applied alarms, so a browser hears of a fire without waiting
    for the feed's next poll."""
    if not settings.ingest.enabled:
        return None
    loop = asyncio.get_running_loop()

    def on_commit(result: BatchResult) -> None:
        if result.by_channel.get("alarm"):
            loop.call_soon_threadsafe(poke_alarms)

    process = IngestProcess(settings, db, metrics=metrics, on_commit=on_commit)
    process.start()
    return process


#: The first generation's threshold for a process that only ingests (CPython's default is 700).
INGEST_GC_THRESHOLD0 = 20_000


def tune_gc_for_ingest() -> None:
    """Spend less of an ingest process on the cyclic garbage collector.

    A batch allocates tens of thousands of short-lived objects (packets, payloads, rows), and
    with CPython's defaults each batch ran dozens of collections that also walked every object
    alive since start-up (SQLAlchemy, pydantic, the caches): about 30 % of ingest's CPU per
    message (bench/bench_ingest.py; 56 -> 38 µs per message in process, cProfile and
    ``gc.disable()`` to compare). So: what exists after start-up is frozen out of the
    collector's view (``gc.freeze``), and the youngest generation is collected every
    :data:`INGEST_GC_THRESHOLD0` allocations instead of 700. Cycles are still collected, a
    little later; nothing ingest keeps depends on when."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(INGEST_GC_THRESHOLD0, gen1, gen2)


def run_ingest(settings: Settings) -> int:
    """Run ingest alone until SIGINT/SIGTERM (``edgefleet fleet ingest CONFIG``)."""
    if not settings.ingest.enabled:
        log.error("no broker configured: set [ingest] host in the config file")
        return 2
    stop = threading.Event()

    def _signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _signal)
    signal.signal(signal.SIGINT, _signal)
    db = Database.from_url(settings.database_url)
    process = IngestProcess(settings, db)
    tune_gc_for_ingest()
    try:
        process.start()
        stop.wait()
    finally:
        process.stop()
        db.dispose()
    return 0
