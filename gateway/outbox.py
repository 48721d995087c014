"""The gateway's durable store-and-forward queue: one SQLite file in WAL mode.

It owns three things (docs/gateway.md):

- ``seq``: one counter per device, shared by its telemetry, alarm and state messages. It is
  assigned in the same transaction that stores the message, so a crash can never hand out a
  ``seq`` without its message, nor store a message twice.
- Delivery bookkeeping: a row leaves the queue only through :meth:`Outbox.ack` (PUBACK < 0x80)
  or :meth:`Outbox.dead_letter` (PUBACK >= 0x80, moved to a table and counted, never dropped).
- The bounded-disk policy: past ``max_bytes`` of stored payload the oldest *telemetry* is dropped
  and counted, in total, per device and as seq ranges, so a consumer can tell a policy drop from
  a loss. Alarms, state, status and acks are never dropped.

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
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "KINDS",
    "NEVER_DROPPED",
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
]

log = logging.getLogger(__name__)

KINDS = frozenset({"telemetry", "alarm", "state", "status", "ack", "event"})
#: Kinds the bounded-disk policy never drops. Only telemetry is dropped; "event" (line-protocol
#: events such as a fire panel's printer port) is kept as well: it is evidence, not a sample.
NEVER_DROPPED = KINDS - {"telemetry"}

SCHEMA_VERSION = 1
#: Drop ranges kept for inspection. The per-device counts are exact forever; ranges are detail.
MAX_DROP_RANGES = 10_000
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
    ('schema_version', 1), ('dropped_telemetry', 0), ('dead_letters', 0);
"""

_ROW = "id, topic, payload, qos, retain, kind, device, seq"


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


@dataclass(frozen=True)
class Stored:
    """What the publisher reads: one row of the queue, payload ready for the wire."""

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


def _encode(body: dict[str, Any]) -> bytes:
    # allow_nan=False: NaN/Infinity are not JSON and a consumer would reject the whole message
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


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
                 check: bool = True, clock: Callable[[], float] = time.time) -> None:
        """Open (or create) the queue at ``path``.

        ``check`` runs ``PRAGMA quick_check`` at open, so a file damaged by a power cut or a
        failing SD card is reported here (as :class:`OutboxCorrupt`) rather than mid-run. It
        reads the whole file: about a second per 100 MB on a Pi's SD card.
        """
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, not {max_bytes}")
        self.path = Path(path)
        self.max_bytes = max_bytes
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
        version = self._meta("schema_version")
        if version != SCHEMA_VERSION:
            raise OutboxError(f"{self.path}: schema version {version}, expected {SCHEMA_VERSION}")
        depth, size = db.execute("SELECT count(*), coalesce(sum(length(payload)), 0) "
                                 "FROM outbox").fetchone()
        self._depth: int = depth
        self._bytes: int = size
        self._dropped: int = self._meta("dropped_telemetry")
        self._dead: int = self._meta("dead_letters")
        log.info("outbox %s open: %d messages, %d bytes waiting", self.path, depth, size)

    # -- producers ---------------------------------------------------------------------------

    def put(self, msg: Message) -> Stored:
        """Store one message (one fsync). Telemetry should come in batches: :meth:`put_many`."""
        return self.put_many([msg])[0]

    def put_many(self, msgs: Sequence[Message]) -> list[Stored]:
        """Store messages in one transaction, assigning each device's next seq in order.

        All or nothing: a bad message (ValueError) or a full disk (OutboxFull) stores none of the
        batch and consumes no seq. On a full disk the oldest telemetry is evicted to make room
        (counted like any policy drop) and the batch retried once; if that is not enough,
        OutboxFull is raised.
        """
        if not msgs:
            return []
        for msg in msgs:
            _validate(msg)
        try:
            return self._insert(msgs)
        except OutboxFull:
            need = sum(len(_encode(m.body)) for m in msgs) * 2 + 64 * 1024
            if not self._evict_for_full_disk(need):
                raise
            log.warning("outbox %s: disk full, evicted the oldest telemetry to store %d "
                        "message(s)", self.path, len(msgs))
            return self._insert(msgs)

    def _insert(self, msgs: Sequence[Message]) -> list[Stored]:
        now = self._clock()
        next_seq: dict[str, int] = {}
        rows: list[tuple[str, bytes, int, int, str, str | None, int | None, float]] = []
        for msg in msgs:
            seq: int | None = None
            body = msg.body
            if msg.device is not None:
                seq = next_seq.get(msg.device) or self._load_next_seq(msg.device)
                next_seq[msg.device] = seq + 1
                body = {**body, "seq": seq}
            rows.append((msg.topic, _encode(body), msg.qos, int(msg.retain), msg.kind,
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
            added = sum(len(r[1]) for r in rows)
            dropped = self._enforce_limit(self._bytes + added, now)
        # Committed: now the in-memory mirrors may move.
        self._next_seq.update(next_seq)
        self._depth += len(rows) - dropped[0]
        self._bytes += added - dropped[1]
        self._dropped += dropped[0]
        return stored

    def _load_next_seq(self, device: str) -> int:
        seq = self._next_seq.get(device)
        if seq is None:
            row = self._db.execute("SELECT next_seq FROM devices WHERE device = ?",
                                   (device,)).fetchone()
            seq = self._next_seq[device] = row[0] if row else 1
        return seq

    # -- the bounded-disk policy -------------------------------------------------------------

    def _enforce_limit(self, total: int, now: float) -> tuple[int, int]:
        """Inside the insert's transaction: drop the oldest telemetry while over max_bytes."""
        if total <= self.max_bytes:
            return 0, 0
        count, freed = self._drop_oldest_telemetry(total - self.max_bytes, now)
        if count:
            log.warning("outbox %s over %d bytes: dropped the %d oldest telemetry message(s) "
                        "(%d bytes)", self.path, self.max_bytes, count, freed)
        if total - freed > self.max_bytes:
            mono = time.monotonic()
            if mono - self._last_over_limit_log >= OVER_LIMIT_LOG_INTERVAL_S:
                self._last_over_limit_log = mono
                log.error("outbox %s holds %d bytes, over its %d-byte limit, in messages that "
                          "are never dropped (alarm, state, status, ack, event); keeping them",
                          self.path, total - freed, self.max_bytes)
        return count, freed

    def _drop_oldest_telemetry(self, excess: int, now: float) -> tuple[int, int]:
        """Delete the oldest telemetry rows freeing >= excess bytes; record the drops."""
        cur = self._db.execute("SELECT id, length(payload) FROM outbox "
                               "WHERE kind = 'telemetry' ORDER BY id")
        ids = plan_drops(_iter_rows(cur), excess)
        cur.close()
        if not ids:
            return 0, 0
        deleted = self._db.execute(
            "DELETE FROM outbox WHERE id IN (SELECT value FROM json_each(?)) "
            "RETURNING device, seq, length(payload)", (json.dumps(ids),)).fetchall()
        by_device: dict[str, list[int]] = {}
        for device, seq, _ in deleted:
            if device is not None:
                by_device.setdefault(device, []).append(seq)
        for device, seqs in by_device.items():
            self._record_drop_range(device, min(seqs), max(seqs), len(seqs), now)
        self._db.executemany("UPDATE devices SET dropped = dropped + ? WHERE device = ?",
                             [(len(s), d) for d, s in by_device.items()])
        self._bump("dropped_telemetry", len(deleted))
        return len(deleted), sum(r[2] for r in deleted)

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
                count, freed = self._drop_oldest_telemetry(need, self._clock())
        except OutboxFull:
            return False
        self._depth -= count
        self._bytes -= freed
        self._dropped += count
        return count > 0

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
        """Delivered (PUBACK < 0x80): delete. Unknown ids (already acked) are ignored."""
        id_list = list(ids)
        if not id_list:
            return
        with self._txn(durable=False):
            deleted = self._db.execute(
                "DELETE FROM outbox WHERE id IN (SELECT value FROM json_each(?)) "
                "RETURNING device, length(payload)", (json.dumps(id_list),)).fetchall()
        self._depth -= len(deleted)
        self._bytes -= sum(r[1] for r in deleted)
        self._open_ranges.difference_update(r[0] for r in deleted)

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
        topic, device, seq, size = moved
        self._depth -= 1
        self._bytes -= size
        self._dead += 1
        self._open_ranges.discard(device)
        log.warning("outbox: broker refused %s (device=%s seq=%s code=%s): %s; dead-lettered",
                    topic, device, seq, code, reason)

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
                           oldest_age_s=age, dropped_by_device=by_device)

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


def _iter_rows(cur: sqlite3.Cursor) -> Iterator[tuple[int, int]]:
    while chunk := cur.fetchmany(256):
        yield from chunk
