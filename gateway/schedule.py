"""The poll schedule of one bus as a pure state machine: which job next, and what a failure does.

No I/O and no clock: the poller passes ``now`` (monotonic seconds) and a jitter factor in, so
every rule below has a table test (tests/gateway/test_schedule.py).

- Each device has two jobs: **status** every ``status_s`` and **telemetry** every
  ``telemetry_s``. A telemetry read covers the status block too, so it pushes status back.
- **Fire status first, with a bounded revisit.** When several jobs are due: fire status, then
  other status, then telemetry; within a level the job that has waited longest goes first. A
  job overdue by a whole period is *starving*: it goes before every other non-fire job, but
  before fire status only once ``FIRE_BURST`` fire polls in a row have run (:class:`Schedule`
  counts them). So on a bus that cannot keep up (a long riser, a noisy line) the fire
  detectors' status reads keep at least ``FIRE_BURST / (FIRE_BURST + 1)`` of the transactions
  and telemetry stretches, instead of the other way round: a fire detector is revisited within
  one round of the fire statuses plus ``n_fire / FIRE_BURST`` other jobs, and telemetry still
  never starves. (Before, a starving job went before fire status outright, and on a saturated
  bus telemetry, always starving, came first: detectors waited 4-8 s for a status read.)
  Urgent writes are the poller's queue and always go before any of these.
- **A garbled reply is not silence.** Bytes that made no valid frame (a CRC error, noise on
  the line) prove the node is alive: the poll is retried at once (:meth:`Timing.retry_now`),
  and if the retry fails too, nothing counts toward offline and nothing backs off
  (:meth:`Timing.garbled`). On a noisy life-safety bus, noise must cost a retry, never a
  detector going unpolled.
- **A poll without an answer keeps its place in line**, once (:meth:`Timing._keep_place`):
  the device is polled again next instead of a whole revisit later; twice in a row, it waits
  its turn.
- **A detector in pre-alarm is watched closely.** A fire detector whose status word says
  *warning* (smoke past the pre-alarm threshold) and no alarm yet is *hot*: its status is read
  every ``HOT_STATUS_S`` and before everything else, so the alarm that usually follows within
  seconds is read within a fraction of a second of the detector latching it, however long the
  riser's round is. Hot polls go ``HOT_BURST`` in a row at most before one ordinary fire status
  poll, so a floor full of smoke takes at most half the bus from the other detectors.
- **A changed status word is an alarm in progress.** When the fast status read shows a change,
  the block read that follows (it carries the alarm id) is retried at once up to
  ``CHANGE_ATTEMPTS`` times, not a whole revisit later, each try but the last with the short
  timeout (:func:`short_try`): on a line with 1 % of bytes flipped a 16-register block fails
  about one time in three.
- **Silence.** A poll of an online node that times out is retried at once as well (the request
  itself may have been garbled on its way). Only when the retry is silent too does it count as
  a failure. After ``OFFLINE_AFTER`` failures in a row the device is offline (reported once)
  and backs off: ``status_s · 2ⁿ · jitter``, capped at ``max_backoff_s``, so a dead node never
  slows the rest of the bus; a fire detector's back-off is capped at ``FIRE_MAX_BACKOFF_S``
  whatever the configuration, because a fire detector that comes back must be heard within
  seconds. A good answer resets the count.
- **Short first tries** (:class:`ReplyTimer`). A request garbled on its way is never answered:
  waiting the configured reply timeout (sized for the slowest node) for it costs a 19200-baud
  riser ten status reads. A node's status reads are timed; once it has answered
  ``LEARN_AFTER`` of them, the first try of every read (status word, status block, telemetry)
  waits ``REPLY_FACTOR`` times its slowest recent reply (at least ``MIN_FIRST_TRY_S``), plus the
  wire time of a longer answer, and the retry waits the full timeout, so a slow reply costs a
  retry, never an offline report. An offline node's probe is a first try too; one that
  has never answered is probed with the bus' learned timeout, with every ``FULL_PROBE_EVERY``-th
  probe waiting the full timeout (a node slower than its neighbours is still found).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

__all__ = [
    "CHANGE_ATTEMPTS",
    "FIRE_BURST",
    "FIRE_MAX_BACKOFF_S",
    "FULL_PROBE_EVERY",
    "HOT_BURST",
    "HOT_STATUS_S",
    "LEARN_AFTER",
    "MIN_FIRST_TRY_S",
    "OFFLINE_AFTER",
    "PRIORITY_FIRE",
    "PRIORITY_HOT",
    "PRIORITY_STARVING",
    "PRIORITY_STATUS",
    "PRIORITY_TELEMETRY",
    "REPLY_FACTOR",
    "Job",
    "ReplyTimer",
    "Schedule",
    "Timing",
    "next_job",
    "short_try",
]

OFFLINE_AFTER = 3  # consecutive silent polls (each retried once) before a node is offline
FIRE_MAX_BACKOFF_S = 3.0  # a fire detector offline is still polled at least this often
FIRE_BURST = 8  # fire status polls in a row before a starving other job may cut in
HOT_STATUS_S = 0.15  # a fire detector in pre-alarm: its status period
HOT_BURST = 1  # hot status polls in a row before an ordinary fire status poll
CHANGE_ATTEMPTS = 8  # tries of the block read after a changed status word (an alarm edge)
PRIORITY_HOT, PRIORITY_FIRE, PRIORITY_STARVING, PRIORITY_STATUS, PRIORITY_TELEMETRY = 1, 2, 3, 4, 5
LEARN_AFTER = 4  # good status replies before a node's first tries get a shorter timeout
REPLY_FACTOR = 2.0  # first-try timeout: this times the slowest of the recent replies
MIN_FIRST_TRY_S = 0.05  # ... and never shorter than this (a loaded host, a USB latency timer)
RECENT_REPLIES = 16  # replies the slowest is taken over
FULL_PROBE_EVERY = 4  # a never-heard node: every n-th probe waits the full timeout
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
    hot: bool = False  # a fire detector in pre-alarm (set by the poller from its status word)
    status_due: float = 0.0
    telemetry_due: float = 0.0
    failures: int = 0  # in a row
    status_was: float = 0.0  # status_due before the poll in progress began (see _keep_place)
    kept_place: bool = False  # a poll without an answer kept its place in line already

    @property
    def offline(self) -> bool:
        return self.failures >= OFFLINE_AFTER

    def priority(self, kind: Kind, now: float) -> int:
        if kind == "status" and self.fire:
            return PRIORITY_HOT if self.hot else PRIORITY_FIRE
        due = self.telemetry_due if kind == "telemetry" else self.status_due
        period = self.telemetry_s if kind == "telemetry" else self.status_s
        if now - due > period:
            return PRIORITY_STARVING  # overdue by a whole period: nobody starves
        return PRIORITY_TELEMETRY if kind == "telemetry" else PRIORITY_STATUS

    def started(self, kind: Kind, now: float, covers_status: bool = True) -> None:
        """A job begins: reschedule first, so a failure below never leaves it due forever.

        ``covers_status``: the telemetry read includes the status block (the whole map, as for
        a node not known online yet), so it pushes the status job back; a read of the class
        block alone leaves the status job where it is."""
        self.status_was = self.status_due
        if kind == "status":
            self.status_due = now + self.status_period_s
        else:
            self.telemetry_due = now + self.telemetry_s
            if covers_status:
                self.status_due = max(self.status_due, now + self.status_period_s)

    @property
    def status_period_s(self) -> float:
        return min(self.status_s, HOT_STATUS_S) if self.hot and self.fire else self.status_s

    def answered(self) -> int:
        """A good answer; returns how many failures in a row it ends."""
        ended, self.failures = self.failures, 0
        self.kept_place = False
        return ended

    def _keep_place(self) -> None:
        """A poll that got no answer (garbled, or silent while online) keeps the device's place
        in line, once: its status is read again next, not a whole revisit later (on a saturated
        riser that is a second or more). Twice in a row, it waits its turn: a node that always
        garbles must not hog the bus. A poll that did not move the status job (telemetry of
        the class block alone) has no place to keep and leaves this once for the status poll."""
        if not self.kept_place and self.status_was < self.status_due:
            self.status_due = self.status_was
            self.kept_place = True

    @property
    def backoff_cap_s(self) -> float:
        return min(self.max_backoff_s, FIRE_MAX_BACKOFF_S) if self.fire else self.max_backoff_s

    def retry_now(self, garbled: bool, attempt: int, changed: bool = False) -> bool:
        """A poll failed on its ``attempt``-th try (0: the first): try it again at once?

        Once per poll, for a garbled reply always (the node is alive), for silence only while
        the node is online (a dead node must not cost two timeouts per back-off period).
        ``changed``: the node's status word just changed (it answered a moment ago) and the
        block read with the alarm id failed: up to ``CHANGE_ATTEMPTS`` tries."""
        if changed:
            return attempt < CHANGE_ATTEMPTS - 1
        return attempt == 0 and (garbled or not self.offline)

    def garbled(self) -> None:
        """A poll (and its retry) got bytes but no valid frame: the node is alive. Nothing
        counts toward offline and nothing backs off; it keeps its place in line once."""
        self._keep_place()

    def failed(self, now: float, jitter: float = 1.0) -> bool:
        """A poll without any answer (silence); True when this one makes the device offline."""
        self.failures += 1
        if self.failures >= OFFLINE_AFTER:
            exponent = min(self.failures - OFFLINE_AFTER + 1, MAX_EXPONENT)
            delay = min(self.backoff_cap_s, self.status_s * 2 ** exponent * jitter)
            self.status_due = now + delay
            self.telemetry_due = max(self.telemetry_due, now + delay)
        else:
            self._keep_place()
        return self.failures == OFFLINE_AFTER

    def link_down(self) -> bool:
        """The bus itself is gone: offline at once; True if it was not offline already."""
        was = self.offline
        self.failures = max(self.failures, OFFLINE_AFTER)
        return not was

    def repoll(self) -> None:
        self.status_due = self.telemetry_due = 0.0


def short_try(attempt: int, changed: bool = False) -> bool:
    """Does the ``attempt``-th try (0: the first) of a poll wait only the learned reply time
    (:meth:`ReplyTimer.first_try_s`) rather than the full timeout?

    A poll's first try does; its retry waits in full, so a slow reply costs a retry, never an
    offline report. The block read of an alarm edge (``changed``: the node answered its status
    word a moment ago) is short on every try but its last: on a noisy line its 37-byte answer
    is garbled one time in three and its request lost one time in thirteen, and a full timeout
    per lost request would make the alarm wait."""
    if changed:
        return attempt < CHANGE_ATTEMPTS - 1
    return attempt == 0


@dataclass(frozen=True)
class Job:
    device: Hashable
    kind: Kind


def next_job(timings: Mapping[K, Timing], now: float, fire_streak: int = 0,
             hot_streak: int = 0) -> Job | float | None:
    """The job to run now, else the seconds until one is due; None with no devices.

    ``fire_streak``: fire status polls run in a row just before (see :class:`Schedule`); from
    ``FIRE_BURST`` on, a starving job goes before fire status. ``hot_streak``: hot status polls
    in a row; from ``HOT_BURST`` on, a hot detector waits its turn among the fire statuses."""
    if not timings:
        return None
    starving_first = fire_streak >= FIRE_BURST
    hot_waits = hot_streak >= HOT_BURST
    best: tuple[int, float, K, Kind] | None = None
    soonest = float("inf")
    for key, timing in timings.items():
        jobs: tuple[tuple[Kind, float], ...] = (("status", timing.status_due),
                                                ("telemetry", timing.telemetry_due))
        for kind, due in jobs:
            if due > now:
                soonest = min(soonest, due)
                continue
            prio, waited = timing.priority(kind, now), due
            if prio == PRIORITY_STARVING and starving_first:
                prio = 0
            elif prio == PRIORITY_HOT and hot_waits:
                prio, waited = PRIORITY_FIRE, float("inf")  # after the fire statuses due
            if best is None or (prio, waited) < (best[0], best[1]):
                best = (prio, waited, key, kind)
    if best is not None:
        return Job(best[2], best[3])
    return soonest - now


class Schedule:
    """:func:`next_job` over one bus' devices, counting the fire status polls in a row."""

    def __init__(self, timings: Mapping[K, Timing]):
        self.timings: Mapping[Any, Timing] = timings
        self.fire_streak = 0
        self.hot_streak = 0

    def next(self, now: float) -> Job | float | None:
        job = next_job(self.timings, now, self.fire_streak, self.hot_streak)
        if isinstance(job, Job):
            timing = self.timings[job.device]
            fire_status = job.kind == "status" and timing.fire
            self.fire_streak = self.fire_streak + 1 if fire_status else 0
            self.hot_streak = self.hot_streak + 1 if fire_status and timing.hot else 0
        return job


@dataclass
class ReplyTimer:
    """How long a node's status reads took when answered: the first try's reply timeout."""

    recent: list[float] = field(default_factory=list)  # seconds, newest last
    answered: int = 0

    def observe(self, seconds: float) -> None:
        self.recent.append(seconds)
        del self.recent[:-RECENT_REPLIES]
        self.answered += 1

    @property
    def learned_s(self) -> float | None:
        """REPLY_FACTOR x the slowest recent reply (at least MIN_FIRST_TRY_S); None until
        LEARN_AFTER replies."""
        if self.answered < LEARN_AFTER:
            return None
        return max(MIN_FIRST_TRY_S, REPLY_FACTOR * max(self.recent))

    def first_try_s(self, configured: float, bus_learned: float | None = None,
                    probe: int = 0, longer_s: float = 0.0) -> float:
        """The reply timeout of a poll's first try (a retry waits ``configured``).

        Replies are learned as status-word reads (one register); a read with a longer answer
        passes ``longer_s``, the wire time of its extra bytes, and its first try waits that
        much longer. A node never heard takes the bus' learned timeout (the other nodes'
        replies), except every ``FULL_PROBE_EVERY``-th probe (``probe`` counts them), which
        waits in full."""
        learned = self.learned_s
        if learned is None:
            if bus_learned is None or probe % FULL_PROBE_EVERY == 0:
                return configured
            learned = bus_learned
        return min(configured, learned + longer_s)
