"""Ingest metrics as Prometheus text: counters kept by this process, plus the delivery
accounting read from the database (so every replica's /metrics shows the same gap totals).

Process counters (each replica its own; Prometheus sums them): messages by channel, duplicates,
rejects by gateway and reason, batches, failures, acknowledgements, and two gauges of lag: how
long the last batch's oldest message waited in ingest before its acknowledgement, and how old
the newest measurement of the last batch was when it became durable.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Mapping

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fleet.ingest.models import IngestStream

__all__ = ["IngestMetrics", "render"]

_ESCAPES = str.maketrans({"\\": r"\\", '"': r"\"", "\n": r"\n"})


def _labels(pairs: Mapping[str, str]) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{str(v).translate(_ESCAPES)}"' for k, v in pairs.items()) + "}"


class IngestMetrics:
    """Thread-safe counters updated by the coordinator and the batch service."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.messages: Counter[str] = Counter()
        self.rejects: Counter[tuple[str, str]] = Counter()
        self.duplicates = 0
        self.batches = 0
        self.failures: Counter[str] = Counter()
        self.acked = 0
        self.queue_depth = 0
        self.ack_lag_s = 0.0
        self.data_age_s = 0.0
        self.connected = False

    def batch_done(self, by_channel: Mapping[str, int], duplicates: int,
                   rejects: Mapping[tuple[str, str], int]) -> None:
        with self._lock:
            self.messages.update(by_channel)
            self.duplicates += duplicates
            self.rejects.update(rejects)
            self.batches += 1

    def batch_failed(self, kind: str) -> None:
        with self._lock:
            self.failures[kind] += 1

    def acknowledged(self, n: int, ack_lag_s: float, data_age_s: float | None) -> None:
        with self._lock:
            self.acked += n
            self.ack_lag_s = ack_lag_s
            if data_age_s is not None:
                self.data_age_s = data_age_s

    def lines(self) -> Iterable[str]:
        with self._lock:
            yield "# HELP edgefleet_ingest_messages_total Messages made durable, by channel."
            yield "# TYPE edgefleet_ingest_messages_total counter"
            for channel, n in sorted(self.messages.items()):
                yield f"edgefleet_ingest_messages_total{_labels({'channel': channel})} {n}"
            yield "# HELP edgefleet_ingest_duplicates_total Redelivered copies, written once."
            yield "# TYPE edgefleet_ingest_duplicates_total counter"
            yield f"edgefleet_ingest_duplicates_total {self.duplicates}"
            yield "# HELP edgefleet_ingest_rejects_total Messages refused, by gateway and reason."
            yield "# TYPE edgefleet_ingest_rejects_total counter"
            for (gateway, reason), n in sorted(self.rejects.items()):
                labels = _labels({"gateway": gateway, "reason": reason})
                yield f"edgefleet_ingest_rejects_total{labels} {n}"
            yield "# TYPE edgefleet_ingest_batches_total counter"
            yield f"edgefleet_ingest_batches_total {self.batches}"
            yield "# HELP edgefleet_ingest_batch_failures_total Batches retried, by cause."
            yield "# TYPE edgefleet_ingest_batch_failures_total counter"
            for kind, n in sorted(self.failures.items()):
                yield f"edgefleet_ingest_batch_failures_total{_labels({'kind': kind})} {n}"
            yield "# TYPE edgefleet_ingest_acked_total counter"
            yield f"edgefleet_ingest_acked_total {self.acked}"
            yield "# HELP edgefleet_ingest_queue_depth Received, not yet acknowledged."
            yield "# TYPE edgefleet_ingest_queue_depth gauge"
            yield f"edgefleet_ingest_queue_depth {self.queue_depth}"
            yield "# HELP edgefleet_ingest_lag_seconds Receipt to acknowledgement, last batch."
            yield "# TYPE edgefleet_ingest_lag_seconds gauge"
            yield f"edgefleet_ingest_lag_seconds {self.ack_lag_s:.6f}"
            yield ("# HELP edgefleet_ingest_data_age_seconds Age of the newest measurement of "
                   "the last batch when it became durable.")
            yield "# TYPE edgefleet_ingest_data_age_seconds gauge"
            yield f"edgefleet_ingest_data_age_seconds {self.data_age_s:.3f}"
            yield "# TYPE edgefleet_ingest_connected gauge"
            yield f"edgefleet_ingest_connected {int(self.connected)}"


def accounting_lines(session: Session, max_series: int = 1000) -> Iterable[str]:
    """Totals over every (device, epoch), and the devices with gaps (worst first)."""
    totals = session.execute(select(
        func.count(), func.coalesce(func.sum(IngestStream.produced), 0),
        func.coalesce(func.sum(IngestStream.received), 0),
        func.coalesce(func.sum(IngestStream.duplicates), 0),
        func.coalesce(func.sum(IngestStream.declared_drops), 0),
        func.coalesce(func.sum(IngestStream.gaps), 0))).one()
    names = ("streams", "produced", "received", "duplicates", "declared_drops", "gaps")
    yield ("# HELP edgefleet_delivery_total Delivery accounting over every (device, epoch): "
           "received + declared_drops + gaps = produced.")
    yield "# TYPE edgefleet_delivery_total gauge"
    for name, value in zip(names, totals, strict=True):
        yield f"edgefleet_delivery_total{_labels({'kind': name})} {int(value)}"
    yield "# HELP edgefleet_device_gaps Seqs neither delivered nor declared dropped, per device."
    yield "# TYPE edgefleet_device_gaps gauge"
    rows = session.execute(
        select(IngestStream.gateway, IngestStream.device, func.sum(IngestStream.gaps))
        .group_by(IngestStream.gateway, IngestStream.device)
        .having(func.sum(IngestStream.gaps) > 0)
        .order_by(func.sum(IngestStream.gaps).desc()).limit(max_series))
    for gateway, device, gaps in rows:
        yield f"edgefleet_device_gaps{_labels({'gateway': gateway, 'device': device})} {gaps}"


def render(metrics: IngestMetrics | None, session: Session | None) -> str:
    """The ingest part of /metrics (Prometheus text exposition format 0.0.4)."""
    out: list[str] = []
    if metrics is not None:
        out += metrics.lines()
    if session is not None:
        out += accounting_lines(session)
    return "\n".join(out) + "\n"
