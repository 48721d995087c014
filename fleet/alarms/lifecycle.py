"""The alarm lifecycle and escalation as pure functions: no database, no clock, no I/O.

Lifecycle (``state``; ``active`` is whether the device still reports the condition)::

    (none) --device raised------> raised, active
    (none) --device cleared-----> raised, inactive      (a fire that came and went still needs
                                                         a human to acknowledge it)
    raised --device cleared-----> raised, inactive
    raised --acknowledge--------> acknowledged          (resolved at once if already inactive)
    acknowledged --device cleared-> resolved, inactive
    acknowledged --resolve------> resolved              (an operator closes it, e.g. false alarm)
    any    --device raised------> unchanged             (a replay: same alarm id, same alarm)

Escalation: an alarm still ``raised`` (unacknowledged) ``after_s`` seconds after it was raised
escalates to the policy's next step; several overdue steps at once jump to the last of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, Protocol

__all__ = ["AlarmView", "EscalationStepLike", "LifecycleError", "Outcome", "escalation_due",
           "next_deadline", "on_acknowledge", "on_device", "on_resolve"]

State = Literal["raised", "acknowledged", "resolved"]


class LifecycleError(ValueError):
    """An operator action the alarm's state does not allow (the message says why)."""


@dataclass(frozen=True)
class AlarmView:
    state: State
    active: bool


@dataclass(frozen=True)
class Outcome:
    state: State
    active: bool
    #: Audit actions the transition amounts to, in order (empty: nothing changed).
    actions: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return bool(self.actions)


def on_device(current: AlarmView | None, report: Literal["raised", "cleared"]) -> Outcome:
    """A device message for this alarm id."""
    if current is None:
        return Outcome("raised", report == "raised",
                       ("alarm.raised",) if report == "raised"
                       else ("alarm.raised", "alarm.cleared"))
    if report == "raised" or not current.active:
        return Outcome(current.state, current.active, ())  # a replay, or a second clear
    if current.state == "acknowledged":
        return Outcome("resolved", False, ("alarm.cleared", "alarm.resolved"))
    return Outcome(current.state, False, ("alarm.cleared",))


def on_acknowledge(current: AlarmView) -> Outcome:
    if current.state != "raised":
        raise LifecycleError(f"the alarm is already {current.state}")
    if not current.active:
        return Outcome("resolved", False, ("alarm.acknowledged", "alarm.resolved"))
    return Outcome("acknowledged", True, ("alarm.acknowledged",))


def on_resolve(current: AlarmView) -> Outcome:
    if current.state == "raised":
        raise LifecycleError("acknowledge the alarm before resolving it")
    if current.state == "resolved":
        raise LifecycleError("the alarm is already resolved")
    return Outcome("resolved", current.active, ("alarm.resolved",))


class EscalationStepLike(Protocol):
    @property
    def after_s(self) -> float: ...
    @property
    def role(self) -> str: ...


def escalation_due(state: str, level: int, raised_at: datetime, now: datetime,
                   steps: Sequence[EscalationStepLike]) -> int | None:
    """The escalation level the alarm should be at by ``now`` if above ``level``, else None.

    Level n (1-based) is reached ``steps[n-1].after_s`` after ``raised_at``. Only unacknowledged
    (``raised``) alarms escalate."""
    if state != "raised":
        return None
    elapsed = (now - raised_at).total_seconds()
    due = 0
    for n, step in enumerate(steps, start=1):
        if elapsed >= step.after_s:
            due = n
    return due if due > level else None


def next_deadline(state: str, level: int, raised_at: datetime,
                  steps: Sequence[EscalationStepLike]) -> datetime | None:
    """When the next escalation falls due (for a countdown on the alarm board)."""
    if state != "raised" or level >= len(steps):
        return None
    return raised_at + timedelta(seconds=steps[level].after_s)
