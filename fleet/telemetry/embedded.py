"""The embedded telemetry store: one SQLite file with retention and downsampling, for the demo,
small sites and the dashboard's recent-history charts (production sites use InfluxDB).

Layout:

- ``raw``: one row per telemetry message, unique on (device, epoch, seq), so a redelivered
  message is ignored (the sink contract's idempotence) and "every message exactly once" is a
  count. Values are a JSON object; kept :attr:`Retention.raw_s` (48 h by default).
- ``minute``: per (device, field, minute) count, sum, min and max, rolled up from ``raw`` by
  :meth:`EmbeddedStore.maintain` (called from the write path at most once a
  :attr:`Retention.maintain_every_s`); kept :attr:`Retention.minute_s` (30 days).

Roll-up is exact and repeatable: a minute still covered by ``raw`` is recomputed from its raw
rows; a message arriving later than the raw retention (a gateway back after days offline) is
added to its minute, since its neighbours' raw rows are gone. Writes commit with
``synchronous=FULL``: when :meth:`write` returns the batch survives a power cut, which is what
ingest waits for before acknowledging the broker.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fleet.telemetry.sink import Reading, SinkError

__all__ = ["EmbeddedStore", "Point", "Retention"]

log = logging.getLogger(__name__)

MINUTE_MS = 60_000

#: One encoder for every row's values (json.dumps with options builds a new one per call).
_encode_values = json.JSONEncoder(separators=(",", ":")).encode

_SCHEMA = """
CREATE TABLE IF NOT EXISTS raw (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL, epoch TEXT NOT NULL, seq INTEGER NOT NULL,
    ts INTEGER NOT NULL, class TEXT NOT NULL, gateway TEXT NOT NULL, vals TEXT NOT NULL,
    UNIQUE (device, epoch, seq));
CREATE INDEX IF NOT EXISTS raw_device_ts ON raw (device, ts);
CREATE TABLE IF NOT EXISTS minute (
    device TEXT NOT NULL, field TEXT NOT NULL, bucket INTEGER NOT NULL,
    n INTEGER NOT NULL, total REAL NOT NULL, lo REAL NOT NULL, hi REAL NOT NULL,
    PRIMARY KEY (device, field, bucket)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class Retention:
    raw_s: float = 48 * 3600
    minute_s: float = 30 * 86400
    maintain_every_s: float = 60.0


@dataclass(frozen=True)
class Point:
    """One step of a series: the bucket's start (Unix ms) and its statistics."""

    t_ms: int
    mean: float
    min: float
    max: float
    n: int


class EmbeddedStore:
    """A :class:`~fleet.telemetry.sink.TelemetrySink` on one SQLite file; thread-safe."""

    def __init__(self, path: Path, retention: Retention | None = None) -> None:
        self.path = path
        self.retention = retention or Retention()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, timeout=30, check_same_thread=False,
                                     isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA busy_timeout=30000")
        self._conn.executescript(_SCHEMA)
        self._last_maintain = time.monotonic()

    # -- the sink ---------------------------------------------------------------------------------
    def write(self, readings: Sequence[Reading]) -> None:
        rows = [(r.device, r.epoch, r.seq, r.ts_ms, r.device_class, r.gateway,
                 _encode_values(dict(r.values))) for r in readings]
        try:
            with self._lock:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    self._conn.executemany(
                        "INSERT OR IGNORE INTO raw (device, epoch, seq, ts, class, gateway, vals)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise SinkError(f"embedded store {self.path}: {exc}") from exc
        if time.monotonic() - self._last_maintain >= self.retention.maintain_every_s:
            self.maintain()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- retention and downsampling -----------------------------------------------------------
    def _meta(self, key: str) -> int:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def maintain(self, now_ms: int | None = None) -> None:
        """Roll new raw rows up into minutes, then drop what is past retention."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        raw_cutoff = now_ms - int(self.retention.raw_s * 1000)
        minute_cutoff = now_ms - int(self.retention.minute_s * 1000)
        with self._lock:
            self._last_maintain = time.monotonic()
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                rolled, pruned = self._meta("rolled_id"), self._meta("pruned_before")
                top = self._conn.execute("SELECT coalesce(max(id), 0) FROM raw").fetchone()[0]
                if top > rolled:
                    self._roll_up(rolled, top, pruned)
                self._conn.execute("DELETE FROM raw WHERE ts < ?", (raw_cutoff,))
                self._conn.execute("DELETE FROM minute WHERE bucket < ?",
                                   (minute_cutoff - minute_cutoff % MINUTE_MS,))
                # Raw rows of the minute containing the cutoff are partly gone: from here on a
                # late row in it is added, not recomputed.
                boundary = raw_cutoff - raw_cutoff % MINUTE_MS + MINUTE_MS
                self._conn.executemany(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                    [("rolled_id", top), ("pruned_before", max(pruned, boundary))])
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def _roll_up(self, rolled: int, top: int, pruned_before: int) -> None:
        # Minutes whose raw rows were pruned: add the late rows to what the minute holds.
        self._conn.execute(
            "INSERT INTO minute (device, field, bucket, n, total, lo, hi) "
            "SELECT r.device, j.key, r.ts - r.ts % 60000 AS b, count(*), sum(j.value), "
            "min(j.value), max(j.value) FROM raw r, json_each(r.vals) j "
            "WHERE r.id > ? AND r.id <= ? AND r.ts < ? GROUP BY r.device, j.key, b "
            "ON CONFLICT (device, field, bucket) DO UPDATE SET n = n + excluded.n, "
            "total = total + excluded.total, lo = min(lo, excluded.lo), hi = max(hi, excluded.hi)",
            (rolled, top, pruned_before))
        # Minutes still fully in raw: recompute them from raw (exact, whatever came before).
        touched = self._conn.execute(
            "SELECT device, min(ts), max(ts) FROM raw WHERE id > ? AND id <= ? AND ts >= ? "
            "GROUP BY device", (rolled, top, pruned_before)).fetchall()
        for device, first, last in touched:
            self._conn.execute(
                "INSERT OR REPLACE INTO minute (device, field, bucket, n, total, lo, hi) "
                "SELECT r.device, j.key, r.ts - r.ts % 60000 AS b, count(*), sum(j.value), "
                "min(j.value), max(j.value) FROM raw r, json_each(r.vals) j "
                "WHERE r.device = ? AND r.ts >= ? AND r.ts < ? GROUP BY j.key, b",
                (device, first - first % MINUTE_MS, last - last % MINUTE_MS + MINUTE_MS))

    # -- reading ------------------------------------------------------------------------------
    def series(self, device: str, field: str, since_ms: int, until_ms: int, step_s: float,
               now_ms: int | None = None, gateway: str | None = None) -> list[Point]:
        """``field`` of ``device`` over [since, until) in buckets of ``step_s``; ``gateway``
        narrows raw rows to one gateway's device of that name (ids are unique per gateway).

        Recent buckets come from raw rows, older ones from the minute roll-up (a step under a
        minute is only available where raw rows are kept)."""
        if '"' in field:
            raise ValueError(f"field name {field!r} contains a double quote")
        if step_s <= 0 or until_ms <= since_ms:
            raise ValueError("need step_s > 0 and until > since")
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        step = max(1, int(step_s * 1000))
        raw_from = now_ms - int(self.retention.raw_s * 1000)
        # Older than the raw retention, only minutes exist: bucket on whole minutes there, and
        # start raw at a bucket boundary so no bucket is counted from both tables.
        split = since_ms if since_ms >= raw_from else min(until_ms, -(-raw_from // step) * step)
        points: list[Point] = []
        path = f'$."{field}"'
        with self._lock:
            if split > since_ms:
                mstep = max(MINUTE_MS, step - step % MINUTE_MS)
                rows = self._conn.execute(
                    "SELECT bucket - bucket % ? AS b, sum(total) / sum(n), min(lo), max(hi), "
                    "sum(n) FROM minute WHERE device = ? AND field = ? AND bucket >= ? "
                    "AND bucket < ? GROUP BY b ORDER BY b",
                    (mstep, device, field, since_ms, split)).fetchall()
                points += [Point(int(b), m, lo, hi, int(n)) for b, m, lo, hi, n in rows]
            if until_ms > split:
                rows = self._conn.execute(
                    "SELECT ts - ts % ? AS b, avg(v), min(v), max(v), count(v) FROM "
                    "(SELECT ts, json_extract(vals, ?) AS v FROM raw WHERE device = ? "
                    "AND ts >= ? AND ts < ? AND (? IS NULL OR gateway = ?)) "
                    "WHERE v IS NOT NULL GROUP BY b ORDER BY b",
                    (step, path, device, split, until_ms, gateway, gateway)).fetchall()
                points += [Point(int(b), m, lo, hi, int(n)) for b, m, lo, hi, n in rows]
        return points

    def count(self, device: str | None = None) -> int:
        """Messages held raw (all devices, or one)."""
        with self._lock:
            if device is None:
                return int(self._conn.execute("SELECT count(*) FROM raw").fetchone()[0])
            return int(self._conn.execute("SELECT count(*) FROM raw WHERE device = ?",
                                          (device,)).fetchone()[0])

    def seqs(self, device: str, epoch: str) -> list[int]:
        """The seqs held raw for one (device, epoch), ascending (for acceptance tests)."""
        with self._lock:
            return [int(s) for (s,) in self._conn.execute(
                "SELECT seq FROM raw WHERE device = ? AND epoch = ? ORDER BY seq",
                (device, epoch))]
