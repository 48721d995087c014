"""The poll schedule of one bus as a pure state machine: which job next, and what a failure does.

No I/O and no clock: the poller passes ``now`` (monotonic seconds) and a jitter factor in, so
every rule below has a table test (tests/gateway/test_schedule.py).

- Each device has two jobs: **status** every ``status_s`` and **telemetry** every
  ``telemetry_s``. A telemetry read covers the status block too, so it pushes status back.
- **Priorities** when several jobs are due: fire status, then other status, then telemetry;
  within a level the job that has waited longest goes first. A job overdue by a whole period is
  raised to fire priority, so telemetry never starves. (Urgent writes are the poller's queue and
  always go before any of these.)
- **Failures.** After ``OFFLINE_AFTER`` failures in a row the device is offline (reported once)
  and backs off: ``status_s · 2ⁿ · jitter``, capped at ``max_backoff_s``, so a dead node never
  slows the rest of the bus. A good answer resets the count.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Literal, TypeVar

__all__ = ["OFFLINE_AFTER", "PRIORITY_FIRE", "PRIORITY_STATUS", "PRIORITY_TELEMETRY", "Job",
           "Timing", "next_job"]

OFFLINE_AFTER = 3  # consecutive failed polls before a node is declared offline
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

    def failed(self, now: float, jitter: float = 1.0) -> bool:
        """A poll without a valid answer; True when this one makes the device offline."""
        self.failures += 1
        if self.failures >= OFFLINE_AFTER:
            exponent = min(self.failures - OFFLINE_AFTER + 1, MAX_EXPONENT)
            delay = min(self.max_backoff_s, self.status_s * 2 ** exponent * jitter)
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
