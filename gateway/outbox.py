"""The gateway's durable store-and-forward queue: one SQLite file in WAL mode.

It owns four things (docs/gateway.md, docs/mqtt.md):

- ``epoch`` and ``seq``: ``epoch`` is a random id made once, when the database is created, and
  kept in it; ``seq`` is one counter per device, shared by its telemetry, alarm, state and event
  messages. Both are written into every device payload in the same transaction that stores the
  message, so a crash can never hand out a ``seq`` without its message, nor store a message
  twice; and a lost or replaced database starts a new epoch instead of re-using seqs that a
  consumer would de-duplicate away.
- The gateway's durable state beside the messages it belongs to: the active alarm ids of every
  device (``put_many(..., alarm_state=...)``, committed with the alarm edges that changed them)
  and the command acknowledgements (kind ``"ack"`` rows, delivered like any message).
- Delivery bookkeeping: a row leaves the queue only through :meth:`Outbox.ack` (PUBACK < 0x80)
  or :meth:`Outbox.dead_letter` (PUBACK >= 0x80, moved to a table and counted, never dropped).
- The bounded-disk policy: past ``max_bytes`` of stored payload the oldest *telemetry* is dropped
  and counted, in total, per device and as seq ranges, and declared to the fleet in a ``drops``
  message on the device's topic tree, stored in the same transaction as the drop, so a consumer
  can prove delivered + declared drops = produced. Alarms, state, status, acks, events and drops
  messages are never dropped. The dead-letter table is bounded too (oldest discarded, counted).

Durability. Every transaction that stores messages commits with ``synchronous=FULL``: in WAL mode
that fsyncs the WAL on each commit, so a committed message survives a power cut, not only a
SIGKILL. ``NORMAL`` would be enough for SIGKILL but may roll back the last commits on power loss;
the ``seq`` counter would roll back with them and the next message would reuse a ``seq`` that
may already have been published, so the consumer would de-duplicate a new message away: a silent
loss. Throughput comes from batching instead (:meth:`Outbox.put_many`: one fsync per batch).
Deletions (ack, dead letter) commit with ``NORMAL``: losing one to a power cut only re-delivers a
message, which consumers de-duplicate on ``(device, seq)``, and the next FULL commit makes them
durable anyway, since the WAL is append-only.

One writer owns the connection (STYLE.md, principle 5). Methods are synchronous and short; the
asyncio caller may run them inline.
"""

from __future__ import annotations

import errno
import json
import logging
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from contracts.mqtt import dumps, rfc3339

__all__ = [
    "KINDS",
    "NEVER_DROPPED",
    "AlarmState",
    "DeadLetter",
    "DropRange",
    "Message",
    "Outbox",
    "OutboxCorrupt",
    "OutboxError",
    "OutboxFull",
    "OutboxStats",
    "Stored",
    "plan_drops",
    "seq_runs",
]

log = logging.getLogger(__name__)

KINDS = frozenset({"telemetry", "alarm", "state", "status", "ack", "event", "drops"})
#: Kinds the bounded-disk policy never drops. Only telemetry is dropped; "event" (line-protocol
#: events such as a fire panel's printer port) is kept as well: it is evidence, not a sample;
#: "drops" is the declaration of what was dropped.
NEVER_DROPPED = KINDS - {"telemetry"}

SCHEMA_VERSION = 2
#: Drop ranges kept for inspection. The per-device counts are exact forever; ranges are detail.
MAX_DROP_RANGES = 10_000
#: Dead letters kept for a technician (``edgefleet gateway outbox dead``); older ones are
#: discarded and counted (``dead_letters_discarded``), as the outbox counts its drops.
MAX_DEAD_LETTERS = 10_000
#: The ``reason`` of a ``drops`` message: over ``max_bytes``, or SQLite could not grow the file.
DROP_REASON_BOUND = "disk_bound"
DROP_REASON_FULL = "disk_full"
OVER_LIMIT_LOG_INTERVAL_S = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: a publisher's after_id stays valid
    topic   TEXT    NOT NULL,
    payload BLOB    NOT NULL,
    qos     INTEGER NOT NULL,
    retain  INTEGER NOT NULL,
    kind    TEXT    NOT NULL,
    device  TEXT,
    seq     INTEGER,
    created REAL    NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_telemetry ON outbox(id) WHERE kind = 'telemetry';
CREATE TABLE IF NOT EXISTS devices (
    device   TEXT PRIMARY KEY,
    next_seq INTEGER NOT NULL,
    dropped  INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS drops (
    id        INTEGER PRIMARY KEY,
    device    TEXT    NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq  INTEGER NOT NULL,
    count     INTEGER NOT NULL,
    at        REAL    NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letter (
    id        INTEGER PRIMARY KEY,
    topic     TEXT    NOT NULL,
    payload   BLOB    NOT NULL,
    qos       INTEGER NOT NULL,
    retain    INTEGER NOT NULL,
    kind      TEXT    NOT NULL,
    device    TEXT,
    seq       INTEGER,
    created   REAL    NOT NULL,
    reason    TEXT    NOT NULL,
    code      INTEGER,
    failed_at REAL    NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta(key, value) VALUES
    ('schema_version', 2), ('dropped_telemetry', 0), ('dead_letters', 0),
    ('dead_letters_discarded', 0);
CREATE TABLE IF NOT EXISTS identity (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS active_alarms (
    device   TEXT NOT NULL,
    key      TEXT NOT NULL,  -- the producer's key: an alarm type, or a panel's zone/point key
    alarm_id TEXT NOT NULL,
    PRIMARY KEY (device, key)
) WITHOUT ROWID;
"""

_ROW = "id, topic, payload, qos, retain, kind, device, seq"


def _runs(ordered: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted distinct ids as runs of consecutive ids, (first, last) each."""
    runs: list[tuple[int, int]] = []
    if not ordered:
        return runs
    first = last = ordered[0]
    for i in ordered[1:]:
        if i != last + 1:
            runs.append((first, last))
            first = i
        last = i
    runs.append((first, last))
    return runs


class OutboxError(Exception):
    """The outbox could not do what was asked; the message names the database file."""


class OutboxFull(OutboxError, OSError):
    """The disk (or SQLite's page limit) is full. Nothing already stored was lost."""


class OutboxCorrupt(OutboxError):
    """The database file is not a (healthy) SQLite database. The service decides what to do."""


@dataclass(frozen=True)
class Message:
    """What producers hand in; ``seq`` is not assigned yet."""

    topic: str
    body: dict[str, Any]  # a JSON object; for device messages the outbox sets body["seq"]
    kind: str  # one of KINDS
    device: str | None = None  # seq is assigned per device when set
    qos: int = 1
    retain: bool = False


class Stored(NamedTuple):
    """What the publisher reads: one row of the queue, payload ready for the wire.

    A named tuple rather than a frozen dataclass: the publisher reads every row through it, and
    a frozen dataclass' __init__ (one object.__setattr__ per field) cost ~1 us a row, a third
    of reading the row (measured on a 1,000-row page)."""

    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    kind: str
    device: str | None
    seq: int | None


@dataclass(frozen=True)
class DropRange:
    """Telemetry of ``device`` dropped by the bounded-disk policy.

    Every seq in ``first_seq..last_seq`` that the consumer never receives was dropped by the
    policy (``count`` of them): the seqs in between that were not dropped were still queued when
    the range was extended, and are delivered or dead-lettered (with their seq) later.
    """

    device: str
    first_seq: int
    last_seq: int
    count: int
    at: float


@dataclass(frozen=True)
class DeadLetter:
    id: int
    topic: str
    payload: bytes
    kind: str
    device: str | None
    seq: int | None
    reason: str
    code: int | None
    failed_at: float


@dataclass(frozen=True)
class OutboxStats:
    depth: int  # rows waiting
    bytes: int  # payload bytes waiting
    max_bytes: int
    dropped_telemetry: int  # total ever, persisted
    dead_letters: int  # total ever, persisted
    oldest_age_s: float  # 0.0 when empty
    dropped_by_device: Mapping[str, int] = field(default_factory=dict)
    epoch: str = ""
    dead_letters_held: int = 0  # in the dead-letter table now (at most max_dead_letters)
    dead_letters_discarded: int = 0  # total ever discarded from that table by its bound


#: alarm_state: device -> {key: alarm_id}, the complete set of that device's active alarms.
AlarmState = Mapping[str, Mapping[str, str]]


def plan_drops(candidates: Iterable[tuple[int, int]], excess: int) -> list[int]:
    """The bounded-disk policy, pure: oldest first, drop until ``excess`` bytes are freed.

    ``candidates`` are ``(id, payload_bytes)`` of droppable rows, oldest first. Returns the ids to
    drop; fewer than needed when the candidates run out.
    """
    ids: list[int] = []
    freed = 0
    for row_id, size in candidates:
        if freed >= excess:
            break
        ids.append(row_id)
        freed += size
    return ids


def seq_runs(seqs: Iterable[int]) -> list[list[int]]:
    """Pure: seqs -> sorted inclusive ``[first, last]`` runs, e.g. 1,2,3,7 -> [[1, 3], [7, 7]]."""
    runs: list[list[int]] = []
    for seq in sorted(set(seqs)):
        if runs and seq == runs[-1][1] + 1:
            runs[-1][1] = seq
        else:
            runs.append([seq, seq])
    return runs


def _merge_runs(runs: Iterable[Sequence[int]]) -> list[list[int]]:
    merged: list[list[int]] = []
    for first, last in sorted((int(a), int(b)) for a, b in runs):
        if merged and first <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], last)
        else:
            merged.append([first, last])
    return merged


def _validate(msg: Message) -> None:
    if msg.kind not in KINDS:
        raise ValueError(f"message kind {msg.kind!r} is not one of {sorted(KINDS)}")
    if msg.qos not in (0, 1, 2):
        raise ValueError(f"qos {msg.qos!r} is not 0, 1 or 2")
    if not isinstance(msg.body, dict):
        raise ValueError(f"body of {msg.topic!r} is {type(msg.body).__name__}, not a JSON object")


class Outbox:
    """The durable queue. One instance, one owner, one connection."""

    def __init__(self, path: Path, max_bytes: int = 256 * 1024 * 1024, *,
                 check: bool = True, clock: Callable[[], float] = time.time,
                 max_dead_letters: int = MAX_DEAD_LETTERS) -> None:
        """Open (or create) the queue at ``path``.

        ``check`` runs ``PRAGMA quick_check`` at open, so a file damaged by a power cut or a
        failing SD card is reported here (as :class:`OutboxCorrupt`) rather than mid-run. It
        reads the whole file: about a second per 100 MB on a Pi's SD card.
        """
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, not {max_bytes}")
        if max_dead_letters <= 0:
            raise ValueError(f"max_dead_letters must be positive, not {max_dead_letters}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.max_dead_letters = max_dead_letters
        self._clock = clock
        self._sync_full: bool | None = None
        self._last_over_limit_log = -OVER_LIMIT_LOG_INTERVAL_S
        self._next_seq: dict[str, int] = {}
        # Devices whose latest drop range may still be extended: nothing of theirs was delivered
        # since it was written (see DropRange). Not persisted: a restart closes every range.
        self._open_ranges: set[str] = set()
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as e:
            raise self._translate(e, "open") from e
        try:
            self._open(check)
        except BaseException as e:
            self._db.close()
            if isinstance(e, sqlite3.Error):
                raise self._translate(e, "open") from e
            raise

    def _open(self, check: bool) -> None:
        db = self._db
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise OutboxError(f"{self.path}: SQLite refused WAL mode (journal_mode={mode})")
        # The WAL keeps its high-water size after a checkpoint; cap what stays on disk.
        db.execute("PRAGMA journal_size_limit = 16777216")
        if check:
            result = db.execute("PRAGMA quick_check(1)").fetchone()[0]
            if result != "ok":
                raise OutboxCorrupt(f"{self.path}: SQLite quick_check failed: {result}")
        with self._txn(durable=True):
            # Not executescript(): it would COMMIT outside our transaction.
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            if self._meta("schema_version") == 1:  # v1 had no epoch, active alarms or bound
                db.execute("UPDATE meta SET value = 2 WHERE key = 'schema_version'")
                log.info("outbox %s: schema upgraded from version 1 to 2", self.path)
            row = db.execute("SELECT value FROM identity WHERE key = 'epoch'").fetchone()
            if row is None:
                # A new epoch: this database has never numbered a message, so seq starts at 1
                # and a consumer must not compare it with another database's seqs.
                row = (secrets.token_hex(8),)
                db.execute("INSERT INTO identity(key, value) VALUES ('epoch', ?)", row)
        #: This database's epoch (docs/mqtt.md): in every device payload beside ``seq``.
        self.epoch: str = row[0]
        version = self._meta("schema_version")
        if version != SCHEMA_VERSION:
            raise OutboxError(f"{self.path}: schema version {version}, expected {SCHEMA_VERSION}")
        depth, size = db.execute("SELECT count(*), coalesce(sum(length(payload)), 0) "
                                 "FROM outbox").fetchone()
        self._depth: int = depth
        self._bytes: int = size
        self._dropped: int = self._meta("dropped_telemetry")
        self._dead: int = self._meta("dead_letters")
        self._dead_held: int = db.execute("SELECT count(*) FROM dead_letter").fetchone()[0]
        self._dead_discarded: int = self._meta("dead_letters_discarded")
        log.info("outbox %s open (epoch %s): %d messages, %d bytes waiting", self.path,
                 self.epoch, depth, size)

    # -- producers ---------------------------------------------------------------------------

    def put(self, msg: Message) -> Stored:
        """Store one message (one fsync). Telemetry should come in batches: :meth:`put_many`."""
        return self.put_many([msg])[0]

    def put_many(self, msgs: Sequence[Message], *,
                 alarm_state: AlarmState | None = None) -> list[Stored]:
        """Store messages in one transaction, assigning each device's next seq in order.

        ``alarm_state`` (device -> {key: alarm_id}) replaces those devices' active alarms in the
        same transaction, so the alarm ids the gateway remembers and the raise/clear messages it
        has promised to deliver can never disagree, whatever is killed when. With no messages
        the alarm state alone is stored (durably).

        All or nothing: a bad message (ValueError) or a full disk (OutboxFull) stores none of the
        batch and consumes no seq. On a full disk the oldest telemetry is evicted to make room
        (counted and declared like any policy drop) and the batch retried once; if that is not
        enough, OutboxFull is raised.
        """
        if not msgs and not alarm_state:
            return []
        for msg in msgs:
            _validate(msg)
        try:
            return self._insert(msgs, alarm_state)
        except OutboxFull:
            need = sum(len(dumps(m.body)) for m in msgs) * 2 + 64 * 1024
            if not self._evict_for_full_disk(need):
                raise
            log.warning("outbox %s: disk full, evicted the oldest telemetry to store %d "
                        "message(s)", self.path, len(msgs))
            return self._insert(msgs, alarm_state)

    def _insert(self, msgs: Sequence[Message], alarm_state: AlarmState | None) -> list[Stored]:
        now = self._clock()
        next_seq: dict[str, int] = {}
        rows: list[tuple[str, bytes, int, int, str, str | None, int | None, float]] = []
        epoch = self.epoch
        for msg in msgs:
            seq: int | None = None
            body = msg.body
            if msg.device is not None:
                seq = next_seq.get(msg.device) or self._load_next_seq(msg.device)
                next_seq[msg.device] = seq + 1
                body = {**body, "epoch": epoch, "seq": seq}
            rows.append((msg.topic, dumps(body), msg.qos, int(msg.retain), msg.kind,
                         msg.device, seq, now))
        stored: list[Stored] = []
        with self._txn(durable=True):
            cur = self._db.cursor()
            # One statement per row keeps lastrowid; executemany would not return the ids.
            for row in rows:
                cur.execute("INSERT INTO outbox(topic, payload, qos, retain, kind, device, seq, "
                            "created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
                row_id = cur.lastrowid
                assert row_id is not None
                stored.append(Stored(row_id, row[0], row[1], row[2], bool(row[3]), row[4],
                                     row[5], row[6]))
            if next_seq:
                cur.executemany("INSERT INTO devices(device, next_seq) VALUES (?, ?) "
                                "ON CONFLICT(device) DO UPDATE SET next_seq = excluded.next_seq",
                                next_seq.items())
            if alarm_state:
                self._store_alarm_state(cur, alarm_state)
            added = sum(len(r[1]) for r in rows)
            change = self._enforce_limit(self._bytes + added, now)
        # Committed: now the in-memory mirrors may move.
        self._next_seq.update(next_seq)
        self._apply(change, rows=len(rows), size=added)
        return stored

    def _store_alarm_state(self, cur: sqlite3.Cursor, alarm_state: AlarmState) -> None:
        for device, active in alarm_state.items():
            cur.execute("DELETE FROM active_alarms WHERE device = ?", (device,))
            cur.executemany("INSERT INTO active_alarms(device, key, alarm_id) VALUES (?, ?, ?)",
                            [(device, key, alarm_id) for key, alarm_id in active.items()])

    def active_alarms(self) -> dict[str, dict[str, str]]:
        """device -> {key: alarm_id}: the alarms raised and not yet cleared, as last stored."""
        out: dict[str, dict[str, str]] = {}
        for device, key, alarm_id in self._db.execute(
                "SELECT device, key, alarm_id FROM active_alarms ORDER BY device, key"):
            out.setdefault(device, {})[key] = alarm_id
        return out

    def _apply(self, change: _Change, rows: int = 0, size: int = 0) -> None:
        self._depth += rows + change.rows
        self._bytes += size + change.bytes
        self._dropped += change.dropped

    def _load_next_seq(self, device: str) -> int:
        seq = self._next_seq.get(device)
        if seq is None:
            row = self._db.execute("SELECT next_seq FROM devices WHERE device = ?",
                                   (device,)).fetchone()
            seq = self._next_seq[device] = row[0] if row else 1
        return seq

    # -- the bounded-disk policy -------------------------------------------------------------

    def _enforce_limit(self, total: int, now: float) -> _Change:
        """Inside the insert's transaction: drop the oldest telemetry while over max_bytes."""
        if total <= self.max_bytes:
            return _Change()
        change = _Change()
        # The drops declaration itself takes room (it is never dropped), so drop again until
        # the declarations fit too; they merge into one row per device, so this converges.
        for _ in range(4):
            step = self._drop_oldest_telemetry(total + change.bytes - self.max_bytes, now,
                                               DROP_REASON_BOUND)
            change.add(step)
            if not step.dropped or total + change.bytes <= self.max_bytes:
                break
        if change.dropped:
            log.warning("outbox %s over %d bytes: dropped the %d oldest telemetry message(s) "
                        "(%d bytes)", self.path, self.max_bytes, change.dropped,
                        change.freed)
        if total + change.bytes > self.max_bytes:
            mono = time.monotonic()
            if mono - self._last_over_limit_log >= OVER_LIMIT_LOG_INTERVAL_S:
                self._last_over_limit_log = mono
                log.error("outbox %s holds %d bytes, over its %d-byte limit, in messages that "
                          "are never dropped (alarm, state, status, ack, event); keeping them",
                          self.path, total + change.bytes, self.max_bytes)
        return change

    def _drop_oldest_telemetry(self, excess: int, now: float, reason: str) -> _Change:
        """Delete the oldest telemetry rows freeing >= excess bytes; record and declare them.

        Each device that lost telemetry gets one ``drops`` message (QoS 1, never dropped) in
        this same transaction, naming the dropped seqs as ranges. A ``drops`` message of that
        device still queued is folded into the new one (its ranges merged, the old row deleted),
        so a long outage leaves one declaration per device, not one per eviction.
        """
        cur = self._db.execute("SELECT id, length(payload) FROM outbox "
                               "WHERE kind = 'telemetry' ORDER BY id")
        ids = plan_drops(_iter_rows(cur), excess)
        cur.close()
        if not ids:
            return _Change()
        deleted = self._db.execute(
            "DELETE FROM outbox WHERE id IN (SELECT value FROM json_each(?)) "
            "RETURNING device, seq, length(payload), topic", (json.dumps(ids),)).fetchall()
        change = _Change(rows=-len(deleted), bytes=-sum(r[2] for r in deleted),
                         dropped=len(deleted))
        change.freed = -change.bytes
        by_device: dict[str, list[int]] = {}
        topics: dict[str, str] = {}
        for device, seq, _, topic in deleted:
            if device is not None:
                by_device.setdefault(device, []).append(seq)
                topics[device] = topic
        for device, seqs in by_device.items():
            self._record_drop_range(device, min(seqs), max(seqs), len(seqs), now)
            self._declare_drops(device, topics[device], seqs, reason, now, change)
        self._db.executemany("UPDATE devices SET dropped = dropped + ? WHERE device = ?",
                             [(len(s), d) for d, s in by_device.items()])
        self._bump("dropped_telemetry", len(deleted))
        return change

    def _declare_drops(self, device: str, telemetry_topic: str, seqs: list[int], reason: str,
                       now: float, change: _Change) -> None:
        runs = seq_runs(seqs)
        pending = self._db.execute(
            "DELETE FROM outbox WHERE kind = 'drops' AND device = ? "
            "RETURNING payload", (device,)).fetchall()
        for (payload,) in pending:
            old = json.loads(payload)
            if old.get("reason") == reason:
                runs = _merge_runs([*old["ranges"], *runs])
            else:  # a different reason keeps its own message: re-insert it as it was
                pending_reason_row = self._db.execute(
                    "INSERT INTO outbox(topic, payload, qos, retain, kind, device, seq, created) "
                    "VALUES (?, ?, 1, 0, 'drops', ?, NULL, ?) RETURNING id",
                    (_drops_topic(telemetry_topic), payload, device, now)).fetchone()
                assert pending_reason_row is not None
                change.rows += 1
                change.bytes += len(payload)
            change.rows -= 1
            change.bytes -= len(payload)
        body = {"v": 1, "device": device, "epoch": self.epoch, "ranges": runs,
                "reason": reason, "ts": rfc3339(datetime.fromtimestamp(now, UTC))}
        payload = dumps(body)
        self._db.execute("INSERT INTO outbox(topic, payload, qos, retain, kind, device, seq, "
                         "created) VALUES (?, ?, 1, 0, 'drops', ?, NULL, ?)",
                         (_drops_topic(telemetry_topic), payload, device, now))
        change.rows += 1
        change.bytes += len(payload)

    def _record_drop_range(self, device: str, first: int, last: int, count: int,
                           now: float) -> None:
        latest = self._db.execute("SELECT id FROM drops WHERE device = ? ORDER BY id DESC "
                                  "LIMIT 1", (device,)).fetchone()
        if latest is not None and device in self._open_ranges:
            self._db.execute("UPDATE drops SET last_seq = max(last_seq, ?), "
                             "first_seq = min(first_seq, ?), count = count + ?, at = ? "
                             "WHERE id = ?", (last, first, count, now, latest[0]))
            return
        self._db.execute("INSERT INTO drops(device, first_seq, last_seq, count, at) "
                         "VALUES (?, ?, ?, ?, ?)", (device, first, last, count, now))
        self._db.execute("DELETE FROM drops WHERE id <= (SELECT max(id) FROM drops) - ?",
                         (MAX_DROP_RANGES,))
        self._open_ranges.add(device)

    def _evict_for_full_disk(self, need: int) -> bool:
        """After SQLITE_FULL: drop telemetry (oldest first) to free pages for a retry."""
        try:
            with self._txn(durable=True):
                change = self._drop_oldest_telemetry(need, self._clock(), DROP_REASON_FULL)
        except OutboxFull:
            return False
        self._apply(change)
        return change.dropped > 0

    # -- the publisher -----------------------------------------------------------------------

    def peek(self, limit: int, after_id: int = 0) -> list[Stored]:
        """Up to ``limit`` messages with id > after_id, oldest first (= per-device seq order)."""
        try:
            rows = self._db.execute(f"SELECT {_ROW} FROM outbox WHERE id > ? ORDER BY id "
                                    "LIMIT ?", (after_id, limit)).fetchall()
        except sqlite3.Error as e:
            raise self._translate(e, "peek") from e
        return [Stored(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6], r[7]) for r in rows]

    def ack(self, ids: Iterable[int]) -> None:
        """Delivered (PUBACK < 0x80): delete. Unknown ids (already acked) are ignored.

        The publisher acks in send order, so the ids are runs of consecutive ids: each run is
        deleted by range, its rows counted and sized by one aggregate beforehand (half the cost
        of deleting id by id and returning every row, measured: ~1.8 against ~3.5 us a message).
        Scattered ids take the one-statement path."""
        ordered = sorted(set(ids))
        if not ordered:
            return
        runs = _runs(ordered)
        db = self._db
        closed: set[str | None] = set()
        count = size = 0
        with self._txn(durable=False):
            if len(runs) > 8 and 4 * len(runs) > len(ordered):
                deleted = db.execute(
                    "DELETE FROM outbox WHERE id IN (SELECT value FROM json_each(?)) "
                    "RETURNING device, length(payload), kind", (json.dumps(ordered),)).fetchall()
                count, size = len(deleted), sum(r[1] for r in deleted)
                closed.update(r[0] for r in deleted if r[2] != "drops")
            else:
                for first, last in runs:
                    n, total = db.execute(
                        "SELECT count(*), total(length(payload)) FROM outbox "
                        "WHERE id BETWEEN ? AND ?", (first, last)).fetchone()
                    if not n:
                        continue
                    if self._open_ranges:  # a device whose drop range a delivery closes
                        closed.update(r[0] for r in db.execute(
                            "SELECT DISTINCT device FROM outbox WHERE id BETWEEN ? AND ? "
                            "AND kind != 'drops'", (first, last)))
                    db.execute("DELETE FROM outbox WHERE id BETWEEN ? AND ?", (first, last))
                    count += n
                    size += int(total)
        self._depth -= count
        self._bytes -= size
        self._open_ranges.difference_update(closed)

    def dead_letter(self, id: int, reason: str, code: int | None = None) -> None:
        """Refused by the broker (PUBACK >= 0x80): move to dead_letter with reason and code."""
        now = self._clock()
        with self._txn(durable=False):
            moved = self._db.execute(
                "INSERT INTO dead_letter(id, topic, payload, qos, retain, kind, device, seq, "
                "created, reason, code, failed_at) SELECT id, topic, payload, qos, retain, kind, "
                "device, seq, created, ?, ?, ? FROM outbox WHERE id = ? "
                "RETURNING topic, device, seq, length(payload)",
                (reason, code, now, id)).fetchone()
            if moved is None:
                log.warning("outbox %s: dead_letter(%d) for a message no longer queued",
                            self.path, id)
                return
            self._db.execute("DELETE FROM outbox WHERE id = ?", (id,))
            self._bump("dead_letters", 1)
            over = self._dead_held + 1 - self.max_dead_letters
            discarded = 0
            if over > 0:  # bounded like the outbox: the oldest letters go, counted
                discarded = len(self._db.execute(
                    "DELETE FROM dead_letter WHERE id IN (SELECT id FROM dead_letter "
                    "ORDER BY failed_at, id LIMIT ?) RETURNING id", (over,)).fetchall())
                self._bump("dead_letters_discarded", discarded)
        topic, device, seq, size = moved
        self._depth -= 1
        self._bytes -= size
        self._dead += 1
        self._dead_held += 1 - discarded
        self._dead_discarded += discarded
        self._open_ranges.discard(device)
        log.warning("outbox: broker refused %s (device=%s seq=%s code=%s): %s; dead-lettered",
                    topic, device, seq, code, reason)
        if discarded:
            log.warning("outbox %s: dead-letter table full (%d); discarded the %d oldest",
                        self.path, self.max_dead_letters, discarded)

    def requeue_dead(self, ids: Iterable[int] | None = None) -> int:
        """A technician's retry: move dead letters (all, or ``ids``) back into the queue.

        They keep their payload, so their epoch and seq: a consumer that already has the seq
        de-duplicates it. They queue behind what is waiting (new row ids). Returns how many.
        """
        where, args = "", tuple[str, ...]()
        if ids is not None:
            where, args = "WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(list(ids)),)
        with self._txn(durable=True):
            moved = self._db.execute(
                f"DELETE FROM dead_letter {where} RETURNING topic, payload, qos, retain, kind, "
                "device, seq, created", args).fetchall()
            moved.sort(key=lambda r: r[7])  # oldest first, as they were queued
            self._db.executemany("INSERT INTO outbox(topic, payload, qos, retain, kind, device, "
                                 "seq, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", moved)
        self._depth += len(moved)
        self._bytes += sum(len(r[1]) for r in moved)
        self._dead_held -= len(moved)
        if moved:
            log.warning("outbox %s: %d dead letter(s) re-queued", self.path, len(moved))
        return len(moved)

    # -- inspection --------------------------------------------------------------------------

    def next_seq(self, device: str) -> int:
        """The seq the next message of ``device`` gets."""
        return self._load_next_seq(device)

    def stats(self) -> OutboxStats:
        oldest = self._db.execute("SELECT created FROM outbox ORDER BY id LIMIT 1").fetchone()
        age = max(0.0, self._clock() - oldest[0]) if oldest else 0.0
        by_device = dict(self._db.execute("SELECT device, dropped FROM devices "
                                          "WHERE dropped > 0 ORDER BY device").fetchall())
        return OutboxStats(depth=self._depth, bytes=self._bytes, max_bytes=self.max_bytes,
                           dropped_telemetry=self._dropped, dead_letters=self._dead,
                           oldest_age_s=age, dropped_by_device=by_device, epoch=self.epoch,
                           dead_letters_held=self._dead_held,
                           dead_letters_discarded=self._dead_discarded)

    def drop_ranges(self, device: str | None = None) -> list[DropRange]:
        """Policy drops as seq ranges, oldest first (the newest MAX_DROP_RANGES are kept)."""
        sql = "SELECT device, first_seq, last_seq, count, at FROM drops"
        args: tuple[str, ...] = ()
        if device is not None:
            sql, args = sql + " WHERE device = ?", (device,)
        return [DropRange(*r) for r in self._db.execute(sql + " ORDER BY id", args)]

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The newest dead letters, newest first."""
        rows = self._db.execute("SELECT id, topic, payload, kind, device, seq, reason, code, "
                                "failed_at FROM dead_letter ORDER BY failed_at DESC, id DESC "
                                "LIMIT ?", (limit,)).fetchall()
        return [DeadLetter(*r) for r in rows]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- SQLite plumbing ---------------------------------------------------------------------

    @contextmanager
    def _txn(self, durable: bool) -> Iterator[None]:
        """BEGIN IMMEDIATE .. COMMIT; durable=True fsyncs the WAL at commit (synchronous=FULL)."""
        try:
            if self._sync_full is not durable:
                self._db.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
                self._sync_full = durable
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise self._translate(e, "begin") from e
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException as e:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            if isinstance(e, sqlite3.Error):
                raise self._translate(e, "write") from e
            raise

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def _bump(self, key: str, by: int) -> None:
        self._db.execute("UPDATE meta SET value = value + ? WHERE key = ?", (by, key))

    def _translate(self, e: sqlite3.Error, doing: str) -> Exception:
        code = getattr(e, "sqlite_errorcode", 0) & 0xFF  # primary result code
        if code == sqlite3.SQLITE_FULL:
            return OutboxFull(errno.ENOSPC, f"outbox {doing}: database or disk is full",
                              str(self.path))
        if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
            return OutboxCorrupt(f"{self.path}: {e} (during {doing})")
        return OutboxError(f"{self.path}: {e} (during {doing})")


@dataclass
class _Change:
    """What one transaction did to the queue beyond the rows it inserted (mirrors' deltas)."""

    rows: int = 0
    bytes: int = 0
    dropped: int = 0
    freed: int = 0  # payload bytes of the dropped telemetry (for the log)

    def add(self, other: _Change) -> None:
        self.rows += other.rows
        self.bytes += other.bytes
        self.dropped += other.dropped
        self.freed += other.freed


def _drops_topic(telemetry_topic: str) -> str:
    return telemetry_topic.rsplit("/", 1)[0] + "/drops"


def _iter_rows(cur: sqlite3.Cursor) -> Iterator[tuple[int, int]]:
    while chunk := cur.fetchmany(256):
        yield from chunk
