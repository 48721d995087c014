"""Campaign waves as a pure state machine: how many devices each wave takes, when a wave has
failed badly enough to halt the campaign, and what one timer step does. No I/O, no clock: the
caller passes ``now`` and the members' facts, and applies the :class:`Step` it gets back.

Rules (docs/fleet.md, "Releases and campaigns"):

- Waves are cumulative percentages of the targeted devices (default 1, 10, 50, 100); every
  wave takes at least one device, so a small campaign has fewer waves, never an empty one.
- A running campaign offers the update to its current wave's pending devices, except those at
  a site with an active fire or flood alarm (``hazard``): they wait until the alarm clears.
- A wave has ended when every device in it has ended (confirmed, failed or cancelled). Its
  failure rate is failed / (confirmed + failed): cancelled devices say nothing of the release.
- The campaign halts on its own as soon as the current wave's failure rate can no longer end
  at or below the threshold (failed > threshold × the devices that will finish), and at the
  latest when the wave ends above it; otherwise the next wave starts, and after the last the
  campaign is completed.
- A device that was offered and then reports nothing for ``timeout_s`` has failed
  (``timeout``), in any campaign state: a paused campaign still hears from devices in flight.
- A device's progress only moves forward (:func:`event_applies`): OtaEvents are applied in
  their gateway's (epoch, seq) order (another epoch, a replaced outbox, is ordered by the
  event's timestamp), an ended device never changes again, and a committed image never goes
  back to a phase before the commit (a commit cannot be taken back).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

__all__ = ["ACTIVE", "AFTER_COMMIT", "FINAL", "IN_FLIGHT", "Halt", "Member", "Step", "WaveStats",
           "event_applies", "plan_waves", "should_halt", "step", "wave_stats"]

#: Device states that end its part in a campaign.
FINAL = frozenset({"confirmed", "failed", "cancelled"})
#: Offered and not yet ended: the command is out, or the gateway reports a phase.
IN_FLIGHT = frozenset({"sent", "accepted", "downloading", "verified", "queued", "transferring",
                       "committed", "trial"})
#: Phases in which the device holds the committed image: nothing before the commit follows.
AFTER_COMMIT = frozenset({"committed", "trial"})
#: Campaign states in which the timer still has work (offers, timeouts, halts).
ACTIVE = frozenset({"running", "paused", "halted", "cancelled"})


def event_applies(state: str, last: tuple[str, int, datetime | None] | None,
                  event: tuple[str, int, datetime], phase: str) -> bool:
    """Whether an OtaEvent with ``phase`` and (epoch, seq, ts) ``event`` moves a member in
    ``state`` whose last applied event was ``last`` (None: none yet). Older events (a lower or
    equal seq in the same epoch; an earlier timestamp from another epoch: a replayed or
    late-drained old outbox) and anything after the member ended change nothing; neither does
    a phase before the commit once the image is committed."""
    if state in FINAL:
        return False
    if last is not None:
        epoch, seq, ts = event
        last_epoch, last_seq, last_ts = last
        if epoch == last_epoch and seq <= last_seq:
            return False
        if epoch != last_epoch and last_ts is not None and ts < last_ts:
            return False
    return not (state in AFTER_COMMIT and phase in IN_FLIGHT - AFTER_COMMIT)


def plan_waves(n: int, waves: Sequence[float]) -> list[int]:
    """The size of each wave for ``n`` devices and cumulative ``waves`` (percent); every wave
    has at least one device, and the sizes add up to ``n`` (fewer waves when n is small)."""
    sizes: list[int] = []
    done = 0
    for percent in waves:
        if done >= n:
            break
        target = min(n, max(math.ceil(n * percent / 100 - 1e-9), done + 1))
        sizes.append(target - done)
        done = target
    return sizes


@dataclass(frozen=True)
class Member:
    """One device in a campaign, as the step needs it."""

    id: int
    wave: int
    state: str
    hazard: bool = False
    #: When it last changed (offered or reported); the timeout counts from here.
    updated_at: datetime | None = None


@dataclass(frozen=True)
class WaveStats:
    total: int
    confirmed: int
    failed: int
    cancelled: int

    @property
    def ended(self) -> bool:
        return self.confirmed + self.failed + self.cancelled == self.total

    @property
    def failure_rate(self) -> float:
        finished = self.confirmed + self.failed
        return self.failed / finished if finished else 0.0


def wave_stats(members: Sequence[Member], wave: int) -> WaveStats:
    states = [m.state for m in members if m.wave == wave]
    return WaveStats(len(states), states.count("confirmed"), states.count("failed"),
                     states.count("cancelled"))


def should_halt(stats: WaveStats, threshold: float) -> bool:
    """Halt now: the wave's failure rate is above ``threshold`` and cannot come back under it
    (every device still running would have to succeed, and even then it would not)."""
    will_finish = stats.total - stats.cancelled
    if stats.failed == 0 or will_finish == 0:
        return False
    return stats.failed > threshold * will_finish or (stats.ended
                                                     and stats.failure_rate > threshold)


@dataclass(frozen=True)
class Halt:
    """Why a campaign halted, as data: the API gives it beside the stored sentence so a page can
    word it in its own language. ``code`` is ``failure_rate`` (the only halt there is);
    ``wave`` is 1-based; ``failed`` of ``finished`` (confirmed + failed) devices failed."""

    code: str
    wave: int
    failed: int
    finished: int

    def text(self, threshold: float) -> str:
        """The sentence stored as the campaign's ``halt_reason`` (English, for logs and audit)."""
        return (f"wave {self.wave}: {self.failed} of {self.finished} finished devices failed "
                f"(threshold {threshold:.0%})")

    @classmethod
    def parse(cls, text: str) -> Halt | None:
        """The halt a stored ``halt_reason`` says (the inverse of :meth:`text`), or None for an
        empty or unknown one."""
        m = _HALT_TEXT.fullmatch(text)
        if m is None:
            return None
        return cls("failure_rate", int(m["wave"]), int(m["failed"]), int(m["finished"]))


_HALT_TEXT = re.compile(r"wave (?P<wave>\d+): (?P<failed>\d+) of (?P<finished>\d+) finished "
                        r"devices failed \(threshold \d+%\)")


@dataclass(frozen=True)
class Step:
    """What to do: offer these members, fail these (timeout), and the campaign's new state."""

    offer: tuple[int, ...] = ()
    timed_out: tuple[int, ...] = ()
    state: str = "running"
    wave: int = 0
    halt_reason: str = ""
    held: tuple[int, ...] = field(default=())  # pending, but at a site with a hazard


def step(state: str, wave: int, waves: int, members: Sequence[Member], threshold: float,
         timeout_s: float, now: datetime) -> Step:
    """One timer step for a campaign in ``state`` at ``wave`` (0-based) of ``waves``."""
    timed_out = tuple(m.id for m in members if m.state in IN_FLIGHT and m.updated_at is not None
                      and (now - m.updated_at).total_seconds() >= timeout_s)
    if timed_out:
        gone = set(timed_out)
        members = [Member(m.id, m.wave, "failed", m.hazard, m.updated_at) if m.id in gone else m
                   for m in members]
    if state != "running":
        return Step(timed_out=timed_out, state=state, wave=wave)
    while True:
        stats = wave_stats(members, wave)
        if should_halt(stats, threshold):
            halt = Halt("failure_rate", wave + 1, stats.failed, stats.confirmed + stats.failed)
            return Step(timed_out=timed_out, state="halted", wave=wave,
                        halt_reason=halt.text(threshold))
        if stats.ended and wave + 1 < waves:
            wave += 1
            continue
        if stats.ended:
            return Step(timed_out=timed_out, state="completed", wave=wave)
        pending = [m for m in members if m.wave == wave and m.state == "pending"]
        return Step(offer=tuple(m.id for m in pending if not m.hazard),
                    timed_out=timed_out, state="running", wave=wave,
                    held=tuple(m.id for m in pending if m.hazard))
