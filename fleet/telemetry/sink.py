"""The one interface every telemetry sink implements, and the reading it is given.

Contract of :meth:`TelemetrySink.write`: when it returns, the whole batch is durable (ingest
acknowledges the messages to the broker right after); when it raises :class:`SinkError`, nothing
may be assumed written and ingest retries the batch. Writing the same reading twice (same device,
epoch and seq) must leave one reading: a crash between the sink's write and the accounting's
commit makes the broker redeliver, and the retry must not double the data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Reading", "SinkError", "TelemetrySink"]


@dataclass(frozen=True, slots=True)
class Reading:
    """One telemetry message, as ingest hands it to a sink. ``ts_ms`` is the gateway's
    measurement time in Unix milliseconds; ``site`` and ``area`` come from the registry (empty
    for a device the registry does not know yet)."""

    device: str
    epoch: str
    seq: int
    ts_ms: int
    device_class: str
    values: Mapping[str, float]
    gateway: str = ""
    site: str = ""
    area: str = ""


class SinkError(Exception):
    """The sink could not make a batch durable (server down, disk full); the batch is retried."""


class TelemetrySink(Protocol):
    def write(self, readings: Sequence[Reading]) -> None:
        """Make ``readings`` durable, idempotently per (device, epoch, seq)."""

    def close(self) -> None:
        """Release connections and files."""
