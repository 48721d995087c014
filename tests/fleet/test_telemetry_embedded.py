"""The embedded telemetry store: exactly-once writes, recent raw series, minute roll-ups that stay
exact across late arrivals, and retention."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from fleet.telemetry import EmbeddedStore, Reading, SinkError
from fleet.telemetry.embedded import Point, Retention

MIN = 60_000
HOUR = 60 * MIN
NOW = 1_764_000_000_000 - 1_764_000_000_000 % HOUR  # a whole hour, for readable buckets


def _reading(seq: int, ts_ms: int, temperature: float, device: str = "fire-1") -> Reading:
    return Reading(device=device, epoch="e1", seq=seq, ts_ms=ts_ms, device_class="fire",
                   values={"temperature": temperature, "smoke": 0.01}, gateway="gw-1")


@pytest.fixture
def store(tmp_path: Path) -> EmbeddedStore:
    return EmbeddedStore(tmp_path / "telemetry.db",
                         Retention(raw_s=2 * 3600, minute_s=24 * 3600, maintain_every_s=1e9))


def test_a_redelivered_batch_is_stored_once(store: EmbeddedStore) -> None:
    batch = [_reading(s, NOW + s * 1000, 20.0) for s in range(1, 101)]
    store.write(batch)
    store.write(batch[50:])  # the broker redelivers the unacknowledged half after a crash
    assert store.count("fire-1") == 100
    assert store.seqs("fire-1", "e1") == list(range(1, 101))


def test_recent_history_is_bucketed_by_the_requested_step(store: EmbeddedStore) -> None:
    # Readings every 10 s for 3 minutes: 1..18 °C.
    store.write([_reading(i + 1, NOW - 3 * MIN + i * 10_000, float(i + 1)) for i in range(18)])
    points = store.series("fire-1", "temperature", NOW - 3 * MIN, NOW, 60, now_ms=NOW)
    assert points == [Point(NOW - 3 * MIN, 3.5, 1.0, 6.0, 6),
                      Point(NOW - 2 * MIN, 9.5, 7.0, 12.0, 6),
                      Point(NOW - MIN, 15.5, 13.0, 18.0, 6)]
    assert store.series("fire-1", "humidity", NOW - 3 * MIN, NOW, 60, now_ms=NOW) == []


def test_old_history_comes_from_minute_rollups_after_raw_rows_expire(
        store: EmbeddedStore) -> None:
    start = NOW - 5 * HOUR
    store.write([_reading(i + 1, start + i * 10_000, float(i % 6)) for i in range(360)])
    store.maintain(now_ms=NOW)  # rolls up, then drops raw rows older than 2 h
    assert store.count() == 0
    points = store.series("fire-1", "temperature", start, start + HOUR, 600, now_ms=NOW)
    assert [p.t_ms for p in points] == [start + k * 10 * MIN for k in range(6)]
    assert all(p == Point(p.t_ms, 2.5, 0.0, 5.0, 60) for p in points)


def test_a_late_message_older_than_raw_retention_joins_its_minute(store: EmbeddedStore) -> None:
    minute = NOW - 5 * HOUR
    store.write([_reading(1, minute + 1000, 10.0), _reading(2, minute + 2000, 20.0)])
    store.maintain(now_ms=NOW)
    # A gateway back after hours offline replays one more reading of that minute.
    store.write([_reading(3, minute + 3000, 60.0)])
    store.maintain(now_ms=NOW)
    [point] = store.series("fire-1", "temperature", minute, minute + MIN, 60, now_ms=NOW)
    assert point == Point(minute, 30.0, 10.0, 60.0, 3)


def test_rolling_up_twice_does_not_double_a_minute(store: EmbeddedStore) -> None:
    minute = NOW - 30 * MIN
    store.write([_reading(1, minute + 1000, 10.0)])
    store.maintain(now_ms=NOW)
    store.write([_reading(2, minute + 2000, 30.0)])
    store.maintain(now_ms=NOW)
    store.maintain(now_ms=NOW)
    with sqlite3.connect(store.path) as db:
        row = db.execute("SELECT n, total, lo, hi FROM minute WHERE field = 'temperature'")
        assert row.fetchall() == [(2, 40.0, 10.0, 30.0)]


def test_minute_rollups_expire_after_their_retention(store: EmbeddedStore) -> None:
    store.write([_reading(1, NOW - 30 * HOUR, 1.0), _reading(2, NOW - 3 * HOUR, 2.0)])
    store.maintain(now_ms=NOW)
    points = store.series("fire-1", "temperature", NOW - 48 * HOUR, NOW, 3600, now_ms=NOW)
    assert [p.mean for p in points] == [2.0]


def test_a_series_request_that_makes_no_sense_is_refused(store: EmbeddedStore) -> None:
    with pytest.raises(ValueError, match="step_s"):
        store.series("fire-1", "temperature", NOW, NOW - 1, 60)
    with pytest.raises(ValueError, match="double quote"):
        store.series("fire-1", 'x"y', NOW - 1, NOW, 60)


def test_a_store_that_cannot_write_raises_a_sink_error_so_nothing_is_acknowledged(
        tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "t.db")
    store.close()
    with pytest.raises(SinkError, match="embedded store"):
        store.write([_reading(1, NOW, 1.0)])
