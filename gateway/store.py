"""Storage that never stops the gateway: the outbox behind a guard that outlives a bad disk.

The outbox (:mod:`gateway.outbox`) is the durable queue; this module owns what the service does
when the disk under it fails, because local safety must never depend on the disk:

- **Edge rules do not wait for storage.** Producers run the rules on the decoded values first
  and hand messages here afterwards; nothing here raises into a producer.
- **A disk that refuses writes** (``OutboxFull``, ``OutboxError``, ``OSError``: SD card full,
  read-only, I/O errors) does not lose messages at once: they are *held in memory*, in order,
  and stored (with their ``seq``, assigned then) as soon as the disk takes writes again, retried
  every ``RETRY_S``. The active alarm state handed in with them (``alarm_state``, see
  :meth:`gateway.outbox.Outbox.put_many`) is held with them and stored in the same transaction
  when they are finally written, so the remembered alarm ids never run ahead of (or behind) the
  edges that changed them. The memory hold is bounded (``HOLD_MAX`` messages): past it, the oldest
  held telemetry (then the oldest of any kind) is given up and counted as ``lost_by_disk``, with
  an ERROR in the log. Held messages have no ``seq`` yet, so a consumer never sees a gap for
  them: a loss of held messages is a loss the gateway counts and says, not a hole in ``seq``.
- **A disk that refuses even to open the outbox** (full or read-only at boot) is the same case:
  messages are held, and opening is retried with every retry; the MQTT session starts once the
  outbox is open (it only ever publishes from the outbox).
- **Whenever the outbox opens** (at boot, late, or new after a quarantine), ``on_open`` is called
  with it before anything is written: the service adopts the alarm state stored there (or
  salvaged from the quarantined file) into its producers and returns its complete current
  state, which is stored with the held messages in their transaction. A new outbox (new epoch)
  thus carries the alarm state over.
- **A corrupt outbox at start** (``OutboxCorrupt``: a power cut mid-write, a failing SD card) is
  moved aside with its WAL, renamed ``outbox.db.corrupt-<UTC time>`` and kept for forensics; a
  new outbox is started and the event is published on the gateway's event topic. Without this
  the service would crash-loop with no polling and no rules.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.outbox import AlarmState, Message, Outbox, OutboxCorrupt, OutboxError

__all__ = ["HOLD_MAX", "RETRY_S", "Store", "open_outbox"]

#: Called with a freshly opened outbox (and the file a corrupt one was moved to, if it was);
#: returns the complete alarm state to store (device ->
#: {key: alarm_id}), or None when the outbox already holds it. May raise a disk error.
OnOpen = Callable[[Outbox, Path | None], AlarmState | None]

log = logging.getLogger(__name__)

HOLD_MAX = 20_000  # messages held in memory while the disk refuses writes (~10 MB)
RETRY_S = 1.0  # how often a refusing disk is tried again
LOG_EVERY_S = 10.0  # storage errors are logged at most this often (with counts)

#: What a refusing disk raises: the outbox's own errors, the OS', and SQLite's raw ones.
DISK_ERRORS = (OutboxError, OSError, sqlite3.Error)


def open_outbox(path: Path, max_bytes: int) -> tuple[Outbox, Path | None, str]:
    """The outbox at ``path``; a corrupt one is moved aside first.

    Returns the outbox, the path the corrupt file was moved to (or None) and the reason."""
    try:
        return Outbox(path, max_bytes=max_bytes), None, ""
    except OutboxCorrupt as exc:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        aside = path.with_name(f"{path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            part = Path(f"{path}{suffix}")
            if part.exists():
                part.rename(Path(f"{aside}{suffix}"))
        log.error("outbox %s is corrupt (%s); moved aside to %s for forensics and started a "
                  "new outbox: messages not yet delivered are in the old file", path, exc, aside)
        return Outbox(path, max_bytes=max_bytes), aside, str(exc)


class Store:
    """Puts messages into the outbox, or holds them while the disk refuses.

    The outbox may be missing (the disk refused even to open it, e.g. full at boot): then every
    message is held and opening is retried with each retry, through ``opener``."""

    def __init__(self, outbox: Outbox | None, *, hold_max: int = HOLD_MAX,
                 clock: Callable[[], float] = time.monotonic,
                 opener: Callable[[], Outbox] | None = None, on_open: OnOpen | None = None):
        self.outbox = outbox
        self.hold_max = hold_max
        self._clock = clock
        self._opener = opener
        self._on_open = on_open
        self.held: deque[Message] = deque()
        #: Alarm state waiting to be stored with the held messages (device -> full state).
        self.pending: dict[str, dict[str, str]] = {}
        self.stored = 0
        self.lost_by_disk = 0
        self.disk_errors = 0
        self.last_error = ""
        self.quarantined: Path | None = None
        self.quarantine_reason = ""
        self._retry_at = 0.0
        self._logged_at = self._full_logged_at = -LOG_EVERY_S

    @classmethod
    def at(cls, path: Path, max_bytes: int, **kwargs: Any) -> Store:
        """The store for the outbox at ``path``; never raises for a disk failure (a corrupt
        outbox is moved aside, see :func:`open_outbox`; any other failure leaves the outbox
        closed and retried later, with messages held in memory meanwhile)."""
        def opener() -> Outbox:
            path.parent.mkdir(parents=True, exist_ok=True)
            outbox, aside, why = open_outbox(path, max_bytes)
            if aside is not None:
                store.quarantined, store.quarantine_reason = aside, why
            return outbox

        store = cls(None, opener=opener, **kwargs)
        store.flush()
        return store

    def _open(self) -> bool:
        if self.outbox is not None:
            return True
        if self._opener is None:
            return False
        outbox: Outbox | None = None
        try:
            outbox = self._opener()
            state = (self._on_open(outbox, self.quarantined) if self._on_open is not None
                     else None)
        except DISK_ERRORS as exc:
            if outbox is not None:
                outbox.close()
            self._refused(exc)
            return False
        self.outbox = outbox
        if state is not None:  # the producers' complete state: newer than anything pending
            self.pending = {k: dict(v) for k, v in state.items()}
        log.info("store: outbox %s open", outbox.path)
        return True

    def put(self, messages: Sequence[Message], alarm_state: AlarmState | None = None) -> bool:
        """Store now if the disk takes it (True), else hold in memory (False). Never raises
        for a disk failure; a malformed message (ValueError, a bug) is logged and dropped.

        ``alarm_state`` (device -> its complete active alarms after these messages) is stored
        in the same transaction as the messages, now or when held ones are written."""
        if self.held or self.pending or self.outbox is None:  # a backlog: keep the order
            self._hold(messages, alarm_state)
            return self.flush()
        try:
            self.outbox.put_many(messages, alarm_state=alarm_state)
        except DISK_ERRORS as exc:
            self._refused(exc)
            self._hold(messages, alarm_state)
            return False
        except ValueError:
            log.exception("store: %d malformed message(s) refused (a bug): %s", len(messages),
                          ", ".join(m.topic for m in messages))
            return False
        self.stored += len(messages)
        return True

    def flush(self) -> bool:
        """Open the outbox if it is not, then store what is held with the pending alarm state
        (at most every RETRY_S after a refusal); True when the outbox is open and nothing is
        held."""
        waiting = self.outbox is None or bool(self.held) or bool(self.pending)
        if not waiting:
            return True
        if self._clock() < self._retry_at or not self._open():
            return False
        assert self.outbox is not None
        if not self.held and not self.pending:
            return True
        batch = list(self.held)
        try:
            self.outbox.put_many(batch, alarm_state=self.pending)
        except DISK_ERRORS as exc:
            self._refused(exc)
            return False
        except ValueError:  # a bug in one message must not block the others behind it
            return self._flush_one_by_one()
        self.held.clear()
        self.pending = {}
        self.stored += len(batch)
        if batch:
            log.warning("store: the disk takes writes again; %d held message(s) stored",
                        len(batch))
        return True

    def _flush_one_by_one(self) -> bool:
        """The held batch holds a malformed message (a bug): store the others one at a time
        (the pending alarm state with the last), log and give up the malformed ones."""
        assert self.outbox is not None
        while self.held:
            msg = self.held[0]
            state = self.pending if len(self.held) == 1 else None
            try:
                self.outbox.put_many([msg], alarm_state=state)
            except DISK_ERRORS as exc:
                self._refused(exc)
                return False
            except ValueError:
                log.exception("store: malformed held message refused (a bug): %s", msg.topic)
            else:
                self.stored += 1
            self.held.popleft()
        if self.pending:
            try:
                self.outbox.put_many([], alarm_state=self.pending)
            except DISK_ERRORS as exc:
                self._refused(exc)
                return False
        self.pending = {}
        return True

    @property
    def healthy(self) -> bool:
        return not self.held and not self.pending

    def _refused(self, exc: BaseException) -> None:
        self.disk_errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        self._retry_at = self._clock() + RETRY_S
        t = self._clock()
        if t - self._logged_at >= LOG_EVERY_S:
            log.error("store: the outbox refuses writes (%s); holding %d message(s) in memory "
                      "(bound %d), %d lost so far; edge rules keep running", self.last_error,
                      len(self.held), self.hold_max, self.lost_by_disk)
            self._logged_at = t

    def _hold(self, messages: Sequence[Message], alarm_state: AlarmState | None) -> None:
        self.held.extend(messages)
        for device, active in (alarm_state or {}).items():
            self.pending[device] = dict(active)
        excess = len(self.held) - self.hold_max
        if excess <= 0:
            return
        kept: deque[Message] = deque()
        for msg in self.held:  # give up the oldest telemetry first
            if excess and msg.kind == "telemetry":
                excess -= 1
                self.lost_by_disk += 1
                continue
            kept.append(msg)
        while excess:
            kept.popleft()
            excess -= 1
            self.lost_by_disk += 1
        self.held = kept
        t = self._clock()
        if t - self._full_logged_at >= LOG_EVERY_S:
            log.error("store: memory hold full (%d messages) while the disk refuses writes; "
                      "%d message(s) lost by disk in total", self.hold_max, self.lost_by_disk)
            self._full_logged_at = t

    def stats(self) -> dict[str, object]:
        return {"held_in_memory": len(self.held), "lost_by_disk": self.lost_by_disk,
                "disk_errors": self.disk_errors, "last_error": self.last_error}
