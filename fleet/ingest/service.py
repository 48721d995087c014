"""One ingest batch as one unit of work: decode, de-duplicate, write, commit. No MQTT here.

:meth:`Ingestor.process` takes the messages the coordinator collected and returns only once
everything they carry is durable; the coordinator then acknowledges them to the broker. Inside
one database transaction it:

1. decodes each message against the contract (:mod:`fleet.ingest.decode`); rejects are counted
   per gateway and reason;
2. loads the accounting of every (gateway, device, epoch) in the batch, locked (``SELECT ... FOR
   UPDATE`` on PostgreSQL in key order, so two replicas never deadlock; SQLite's ``BEGIN
   IMMEDIATE`` serialises writers) and lets :class:`~fleet.ingest.accounting.StreamState` decide
   per seq: new, or a duplicate to acknowledge and otherwise ignore;
3. dispatches the new ones by channel (the table :data:`HANDLERS`): alarms to the alarm
   service, state and gateway status to the registry, drop reports to the accounting;
4. writes the accounting and reject counters, then commits.

Telemetry goes to the sink before that transaction opens. The sink is a different store than the
database, so the two cannot share a transaction; the order makes that safe. The sink write comes
first and is idempotent per (device, epoch, seq): a crash after it and before the commit leaves
the messages unacknowledged and unaccounted, the broker redelivers them, the accounting sees them
as new, and the sink rewrites the same points. (It also keeps the sink's fsync out of the
database's write lock, which SQLite shares between every ingest replica.)
A crash after the commit and before the acknowledgement makes the broker redeliver messages the
accounting already holds: they are counted as duplicates, the sink rewrites the same points and
the database records nothing else for them.

A batch that fails for a reason other than the sink (a bug tripped by one odd message) is split:
each message is processed alone, and one that still fails is recorded as a reject
``internal-error`` and acknowledged, so one bad message never stalls the stream.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from contracts.mqtt import (
    AckPayload,
    AlarmPayload,
    DropsPayload,
    GatewayStatusPayload,
    OtaEvent,
    StatePayload,
    TelemetryPayload,
)
from fleet.core.db import Database, utcnow
from fleet.ingest.accounting import SeqSet, StreamState
from fleet.ingest.batchsql import BatchSQL
from fleet.ingest.decode import Decoded, Rejected, decode
from fleet.ingest.metrics import IngestMetrics
from fleet.ingest.models import IngestReject
from fleet.telemetry.sink import Reading, SinkError, TelemetrySink

__all__ = ["HANDLERS", "BatchResult", "Inbound", "Ingestor"]

log = logging.getLogger(__name__)

StreamKey = tuple[str, str, str]  # gateway, device, epoch


@dataclass(frozen=True, slots=True)
class Inbound:
    """One message as the coordinator hands it over (mid/qos/generation only matter for the
    acknowledgement, which the coordinator does)."""

    topic: str
    payload: bytes
    mid: int = 0
    qos: int = 1
    generation: int = 0
    received_at: float = field(default_factory=time.monotonic)


@dataclass
class BatchResult:
    by_channel: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    rejects: Counter[tuple[str, str]] = field(default_factory=Counter)
    newest_ts: datetime | None = None


# -- dispatch: what each channel does with a new (non-duplicate) message -----------------------
def _alarm(session: Session, gateway: str, payload: object) -> None:
    from fleet.alarms.service import apply_alarm

    assert isinstance(payload, AlarmPayload)
    apply_alarm(session, gateway, payload)


def _state(session: Session, gateway: str, payload: object) -> None:
    from fleet.registry.service import apply_state

    assert isinstance(payload, StatePayload)
    apply_state(session, gateway, payload)


def _gateway_status(session: Session, gateway: str, payload: object) -> None:
    from fleet.registry.service import apply_gateway_status

    assert isinstance(payload, GatewayStatusPayload)
    apply_gateway_status(session, gateway, payload)


def _command_ack(session: Session, gateway: str, payload: object) -> None:
    from fleet.control.service import apply_ack
    from fleet.ota.service import apply_command_ack

    assert isinstance(payload, AckPayload)
    cmd = apply_ack(session, gateway, payload)
    if cmd is not None and cmd.action == "ota":
        apply_command_ack(session, cmd)


def _device_event(session: Session, gateway: str, payload: object) -> None:
    """Device events: OTA progress (decoded as contracts.mqtt.OtaEvent) goes to its campaign;
    other events are accounted and acknowledged only."""
    from fleet.ota.service import apply_event

    if isinstance(payload, OtaEvent):
        apply_event(session, gateway, payload)


Handler = Callable[[Session, str, object], None]

#: Channels handed to another domain's service inside the batch's transaction. Telemetry goes
#: to the sink (batched), drops to the accounting; events and the fleet's own commands are
#: accounted where numbered and otherwise only acknowledged.
HANDLERS: dict[str, Handler] = {
    "alarm": _alarm,
    "state": _state,
    "status": _gateway_status,
    "ack": _command_ack,
    "event": _device_event,
}

#: Channels whose messages carry (epoch, seq) and are therefore de-duplicated and accounted.
_NUMBERED = frozenset({"telemetry", "alarm", "state", "event"})


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


class _Directory:
    """What ingest needs from the registry per device, cached for ``ttl_s`` and fetched for a
    whole batch in one query: whether the device exists, and its telemetry tags (site id,
    area path). Read-only; registering devices stays with the registry service."""

    def __init__(self, ttl_s: float = 60.0) -> None:
        self.ttl_s = ttl_s
        #: (gateway, device) -> (expires, exists, site, area)
        self._cache: dict[tuple[str, str], tuple[float, bool, str, str]] = {}

    def prefetch(self, session: Session, sql: BatchSQL, keys: set[tuple[str, str]]) -> None:
        now = time.monotonic()
        missing = sorted(k for k in keys if (hit := self._cache.get(k)) is None or hit[0] <= now)
        if not missing:
            return
        rows = {(g, d): (site, path) for g, d, site, path in
                sql.directory(session.connection(), missing)}
        for key in missing:
            site, path = rows.get(key, (None, None))
            self._cache[key] = (now + self.ttl_s, key in rows,
                                "" if site is None else str(site), path or "")

    def stale(self, keys: set[tuple[str, str]]) -> bool:
        """Does any of ``keys`` need fetching?"""
        now = time.monotonic()
        return any((hit := self._cache.get(k)) is None or hit[0] <= now for k in keys)

    def tags(self, gateway: str, device: str) -> tuple[str, str]:
        hit = self._cache.get((gateway, device))
        return (hit[2], hit[3]) if hit is not None else ("", "")

    def exists(self, gateway: str, device: str) -> bool:
        hit = self._cache.get((gateway, device))
        return hit is not None and hit[1]

    def forget(self, gateway: str, device: str) -> None:
        self._cache.pop((gateway, device), None)


class Ingestor:
    """Processes batches for one ingest process; thread-compatible (one writer thread)."""

    def __init__(self, db: Database, sink: TelemetrySink, *,
                 metrics: IngestMetrics | None = None, touch_interval_s: float = 5.0,
                 reject_log_interval_s: float = 10.0,
                 handlers: dict[str, Handler] | None = None) -> None:
        self.db = db
        self.sink = sink
        self.metrics = metrics or IngestMetrics()
        self.touch_interval_s = touch_interval_s
        self.reject_log_interval_s = reject_log_interval_s
        self.handlers = HANDLERS if handlers is None else handlers
        self._directory = _Directory()
        #: Accounting rows known to exist (committed): they need no insert-if-missing.
        self._existing: set[StreamKey] = set()
        self._sql = BatchSQL(db.engine.dialect)
        self._touched: dict[tuple[str, str], float] = {}
        self._reject_logged: dict[tuple[str, str], float] = {}

    # -- the public unit of work --------------------------------------------------------------
    def process(self, batch: Sequence[Inbound]) -> BatchResult:
        """Make ``batch`` durable. Raises only when nothing may be acknowledged (the sink or
        the database is unavailable): the caller retries the same batch later."""
        decoded = [decode(m.topic, m.payload) for m in batch]
        try:
            result = self._commit(decoded)
        except SinkError:
            self.metrics.batch_failed("sink")
            raise
        except OperationalError:  # database down, deadlock, serialisation: retry it all
            self.metrics.batch_failed("database")
            raise
        except Exception:
            self.metrics.batch_failed("batch")
            log.exception("ingest batch of %d failed; retrying its messages one by one",
                          len(batch))
            result = self._one_by_one(batch, decoded)
        self._after_commit(result)
        return result

    def _one_by_one(self, batch: Sequence[Inbound], decoded: list[Decoded | Rejected]
                    ) -> BatchResult:
        total = BatchResult()
        for message, item in zip(batch, decoded, strict=True):
            try:
                part = self._commit([item])
            except (SinkError, OperationalError):
                raise
            except Exception as exc:
                gateway = item.gateway
                log.exception("message on %s could not be ingested; counted as a reject",
                              message.topic)
                bad = Rejected(gateway, "internal-error",
                               f"{type(exc).__name__} on {message.topic}"[:500])
                part = self._commit([bad])  # if this fails too, the database is down: raise
            total.by_channel.update(part.by_channel)
            total.duplicates += part.duplicates
            total.rejects.update(part.rejects)
            if part.newest_ts is not None and (total.newest_ts is None
                                                or part.newest_ts > total.newest_ts):
                total.newest_ts = part.newest_ts
        return total

    def _after_commit(self, result: BatchResult) -> None:
        self.metrics.batch_done(result.by_channel, result.duplicates, result.rejects)
        now = time.monotonic()
        for key, n in result.rejects.items():
            if now - self._reject_logged.get(key, -1e18) >= self.reject_log_interval_s:
                self._reject_logged[key] = now
                log.warning("rejected %d message(s) from gateway %s: %s", n, key[0], key[1])

    # -- one transaction ----------------------------------------------------------------------
    def _commit(self, decoded: Sequence[Decoded | Rejected]) -> BatchResult:
        result = BatchResult()
        details: dict[tuple[str, str], str] = {}
        seen: dict[tuple[str, str], tuple[datetime, str | None]] = {}
        devices = {(d.gateway, d.device) for d in decoded
                   if isinstance(d, Decoded) and d.device is not None and d.channel != "cmd"}
        if self._directory.stale(devices):
            with self.db.reading() as session:  # registry reads only: no write lock
                self._directory.prefetch(session, self._sql, devices)
        # Telemetry goes to the sink before the transaction, and all of it: the sink is
        # idempotent per (device, epoch, seq), so the copies the accounting will call duplicates
        # cost a rewrite, not a double; and the sink's own fsync is not spent holding the
        # database's write lock (SQLite serialises every ingest replica on it).
        readings = [self._reading(d.gateway, d.payload) for d in decoded
                    if isinstance(d, Decoded) and isinstance(d.payload, TelemetryPayload)]
        if readings:
            self.sink.write(readings)
        with self.db.transaction() as session:
            keys = sorted({(d.gateway, d.device, d.payload.epoch)  # type: ignore[attr-defined]
                           for d in decoded if isinstance(d, Decoded) and d.device is not None
                           and self._accounted(d)})
            states = self._load(session, keys)
            for item in decoded:
                if isinstance(item, Rejected):
                    result.rejects[(item.gateway, item.reason)] += 1
                    details[(item.gateway, item.reason)] = item.detail
                    continue
                payload = item.payload
                if item.device is not None and self._accounted(item):
                    key = (item.gateway, item.device, payload.epoch)  # type: ignore[attr-defined]
                    if isinstance(payload, DropsPayload):
                        states[key].declare(payload.ranges)
                        result.by_channel["drops"] += 1
                        continue
                    if not states[key].receive(payload.seq):  # type: ignore[attr-defined]
                        result.duplicates += 1
                        continue
                    ts: datetime = payload.ts  # type: ignore[attr-defined]
                    cls: str | None = getattr(payload, "device_class", None)
                    prev = seen.get((item.gateway, item.device))
                    if prev is None or ts > prev[0]:
                        seen[(item.gateway, item.device)] = (ts, cls or (prev[1] if prev
                                                                        else None))
                    if result.newest_ts is None or ts > result.newest_ts:
                        result.newest_ts = ts
                if not isinstance(payload, TelemetryPayload):
                    handler = self.handlers.get(item.channel)
                    if handler is not None:
                        handler(session, item.gateway, payload)
                result.by_channel[item.channel] += 1
            touched = self._touch(session, seen)
            self._save(session, states)
            self._count_rejects(session, result.rejects, details)
        now = time.monotonic()
        for device_key in touched:
            self._touched[device_key] = now
        self._existing.update(states)
        return result

    def _reading(self, gateway: str, payload: TelemetryPayload) -> Reading:
        site, area = self._directory.tags(gateway, payload.device)
        return Reading(device=payload.device, epoch=payload.epoch, seq=payload.seq,
                       ts_ms=_ms(payload.ts), device_class=payload.device_class,
                       values=payload.values, gateway=gateway, site=site, area=area)

    @property
    def _insert(self) -> Callable[..., Any]:
        return pg_insert if self.db.is_postgresql else sqlite_insert

    @staticmethod
    def _accounted(item: Decoded) -> bool:
        if item.channel == "drops":
            return True
        if item.channel not in _NUMBERED:
            return False
        # A device event may come without (epoch, seq) (a fire panel's printer line).
        return getattr(item.payload, "seq", None) is not None and \
            getattr(item.payload, "epoch", None) is not None

    def _touch(self, session: Session, seen: dict[tuple[str, str], tuple[datetime, str | None]]
               ) -> list[tuple[str, str]]:
        """last_seen for the devices not touched in the last touch_interval_s; returns them.

        Devices the registry already holds get one bulk UPDATE per batch (last_seen never goes
        backwards, the gateway's too); a device heard for the first time goes through the
        registry service, which registers it (unassigned) and audits that."""
        from fleet.registry.service import touch_device

        now = time.monotonic()
        touched: list[tuple[str, str]] = []
        bulk: list[tuple[str, str, datetime]] = []
        gateways: dict[str, datetime] = {}
        for (gateway, device), (ts, cls) in seen.items():
            last = self._touched.get((gateway, device))
            if last is not None and now - last < self.touch_interval_s:
                continue
            if self._directory.exists(gateway, device):
                bulk.append((gateway, device, ts))
                gateways[gateway] = max(gateways.get(gateway, ts), ts)
            else:
                touch_device(session, gateway, device, ts, device_class=cls)
                self._directory.forget(gateway, device)  # registered now: refetch its tags
            touched.append((gateway, device))
        if bulk:
            self._sql.touch(session.connection(), bulk, sorted(gateways.items()))
        return touched

    # -- accounting rows ----------------------------------------------------------------------
    def _load(self, session: Session, keys: list[StreamKey]) -> dict[StreamKey, StreamState]:
        if not keys:
            return {}
        conn = session.connection()
        # Create missing rows first (in key order), so the locking read below sees every row.
        # Rows are never deleted, so a key once committed needs no insert again.
        self._sql.insert_missing(conn, [k for k in keys if k not in self._existing], utcnow())
        states: dict[StreamKey, StreamState] = {}
        for gateway, device, epoch, seen, dropped, duplicates in self._sql.load(conn, keys):
            states[(gateway, device, epoch)] = StreamState(
                SeqSet.from_json(seen), SeqSet.from_json(dropped), int(duplicates))
        return states

    def _save(self, session: Session, states: dict[StreamKey, StreamState]) -> None:
        if not states:
            return
        rows = []
        for (gateway, device, epoch), state in states.items():
            t = state.totals()
            rows.append((t.produced, t.received, t.duplicates, t.declared_drops, t.gaps,
                         state.seen.to_json(), state.dropped.to_json(), gateway, device, epoch))
        self._sql.save(session.connection(), rows, utcnow())

    def _count_rejects(self, session: Session, rejects: Counter[tuple[str, str]],
                       details: dict[tuple[str, str], str]) -> None:
        if not rejects:
            return
        insert = self._insert
        now = utcnow()
        for (gateway, reason), n in sorted(rejects.items()):
            stmt = insert(IngestReject).values(
                gateway=gateway, reason=reason, count=n,
                last_detail=details.get((gateway, reason), "")[:500], last_at=now)
            session.execute(stmt.on_conflict_do_update(
                index_elements=["gateway", "reason"],
                set_={"count": IngestReject.count + stmt.excluded.count,
                      "last_detail": stmt.excluded.last_detail,
                      "last_at": stmt.excluded.last_at}))

