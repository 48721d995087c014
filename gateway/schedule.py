"""The poll schedule of one bus as a pure state machine: which job next, and what a failure does.

No I/O and no clock: the poller passes ``now`` (monotonic seconds) and a jitter factor in, so
every rule below has a table test (tests/gateway/test_schedule.py).

- Each device has two jobs: **status** every ``status_s`` and **telemetry** every
  ``telemetry_s``. A telemetry read covers the status block too, so it pushes status back.
- **Priorities** when several jobs are due: fire status, then other status, then telemetry;
  within a level the job that has waited longest goes first. A job overdue by a whole period is
  raised to fire priority, so telemetry never starves. (Urgent writes are the poller's queue and
  always go before any of these.)
- **A garbled reply is not silence.** Bytes that made no valid frame (a CRC error, noise on
  the line) prove the node is alive: the poll is retried at once (:meth:`Timing.retry_now`),
  and if the retry fails too, nothing counts toward offline and nothing backs off
  (:meth:`Timing.garbled`). On a noisy life-safety bus, noise must cost a retry, never a
  detector going unpolled.
- **Silence.** A poll of an online node that times out is retried at once as well (the request
  itself may have been garbled on its way). Only when the retry is silent too does it count as
  a failure. After ``OFFLINE_AFTER`` failures in a row the device is offline (reported once)
  and backs off: ``status_s · 2ⁿ · jitter``, capped at ``max_backoff_s``, so a dead node never
  slows the rest of the bus; a fire detector's back-off is capped at ``FIRE_MAX_BACKOFF_S``
  whatever the configuration, because a fire detector that comes back must be heard within
  seconds. A good answer resets the count.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Literal, TypeVar

__all__ = ["FIRE_MAX_BACKOFF_S", "OFFLINE_AFTER", "PRIORITY_FIRE", "PRIORITY_STATUS",
           "PRIORITY_TELEMETRY", "Job", "Timing", "next_job"]

OFFLINE_AFTER = 3  # consecutive silent polls (each retried once) before a node is offline
FIRE_MAX_BACKOFF_S = 3.0  # a fire detector offline is still polled at least this often
PRIORITY_FIRE, PRIORITY_STATUS, PRIORITY_TELEMETRY = 1, 2, 3
MAX_EXPONENT = 16  # 2**16 periods: far beyond any cap, and no float overflow, ever

Kind = Literal["status", "telemetry"]
K = TypeVar("K", bound=Hashable)


@dataclass
class Timing:
    """One device's place in the schedule."""

    status_s: float
    telemetry_s: float
    max_backoff_s: float
    fire: bool = False  # fire detectors' status goes first
    status_due: float = 0.0
    telemetry_due: float = 0.0
    failures: int = 0  # in a row

    @property
    def offline(self) -> bool:
        return self.failures >= OFFLINE_AFTER

    def priority(self, kind: Kind, now: float) -> int:
        due = self.telemetry_due if kind == "telemetry" else self.status_due
        period = self.telemetry_s if kind == "telemetry" else self.status_s
        if now - due > period:
            return PRIORITY_FIRE  # overdue by a whole period: nobody starves
        if kind == "telemetry":
            return PRIORITY_TELEMETRY
        return PRIORITY_FIRE if self.fire else PRIORITY_STATUS

    def started(self, kind: Kind, now: float) -> None:
        """A job begins: reschedule first, so a failure below never leaves it due forever."""
        if kind == "status":
            self.status_due = now + self.status_s
        else:
            self.telemetry_due = now + self.telemetry_s
            self.status_due = max(self.status_due, now + self.status_s)  # the full read covers it

    def answered(self) -> int:
        """A good answer; returns how many failures in a row it ends."""
        ended, self.failures = self.failures, 0
        return ended

    @property
    def backoff_cap_s(self) -> float:
        return min(self.max_backoff_s, FIRE_MAX_BACKOFF_S) if self.fire else self.max_backoff_s

    def retry_now(self, garbled: bool, attempt: int) -> bool:
        """A poll failed on its ``attempt``-th try (0: the first): try it again at once?

        Once per poll, for a garbled reply always (the node is alive), for silence only while
        the node is online (a dead node must not cost two timeouts per back-off period)."""
        return attempt == 0 and (garbled or not self.offline)

    def garbled(self) -> None:
        """A poll (and its retry) got bytes but no valid frame: the node is alive. Nothing
        counts toward offline and nothing backs off: the next poll comes at its usual time."""

    def failed(self, now: float, jitter: float = 1.0) -> bool:
        """A poll without any answer (silence); True when this one makes the device offline."""
        self.failures += 1
        if self.failures >= OFFLINE_AFTER:
            exponent = min(self.failures - OFFLINE_AFTER + 1, MAX_EXPONENT)
            delay = min(self.backoff_cap_s, self.status_s * 2 ** exponent * jitter)
            self.status_due = now + delay
            self.telemetry_due = max(self.telemetry_due, now + delay)
        return self.failures == OFFLINE_AFTER

    def link_down(self) -> bool:
        """The bus itself is gone: offline at once; True if it was not offline already."""
        was = self.offline
        self.failures = max(self.failures, OFFLINE_AFTER)
        return not was

    def repoll(self) -> None:
        self.status_due = self.telemetry_due = 0.0


@dataclass(frozen=True)
class Job:
    device: Hashable
    kind: Kind


def next_job(timings: Mapping[K, Timing], now: float) -> Job | float | None:
    """The job to run now, else the seconds until one is due; None with no devices."""
    if not timings:
        return None
    best: tuple[int, float, K, Kind] | None = None
    soonest = float("inf")
    for key, timing in timings.items():
        jobs: tuple[tuple[Kind, float], ...] = (("status", timing.status_due),
                                                ("telemetry", timing.telemetry_due))
        for kind, due in jobs:
            if due > now:
                soonest = min(soonest, due)
                continue
            prio = timing.priority(kind, now)
            if best is None or (prio, due) < (best[0], best[1]):
                best = (prio, due, key, kind)
    if best is not None:
        return Job(best[2], best[3])
    return soonest - now
