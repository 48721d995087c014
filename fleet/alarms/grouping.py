"""Flapping suppression and storm grouping, as pure functions over times and ids.

Flapping: a detector that raises the same alarm type again and again (a dusty smoke chamber, a
float switch in waves) buries real alarms. From the ``max_raises``-th raise of one (device,
type) within ``window``, the alarm is marked flapping: it is kept and shown, but it does not
notify on its own (the dashboard shows it muted, the feed flags it).

Storm grouping: when many alarms arrive at one site within ``window`` (a fire sets off every
detector on a floor), they join one group, led by the first alarm's id, so people get one grouped
notification while every member is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["FlapPolicy", "StormPolicy", "is_flapping", "storm_group"]


@dataclass(frozen=True)
class FlapPolicy:
    window: timedelta = timedelta(minutes=10)
    max_raises: int = 4


@dataclass(frozen=True)
class StormPolicy:
    window: timedelta = timedelta(minutes=2)


def is_flapping(earlier_raises: Sequence[datetime], raised_at: datetime,
                policy: FlapPolicy) -> bool:
    """Is a new raise at ``raised_at`` flapping, given the same (device, type)'s earlier raise
    times? Counts the new raise; only raises within ``window`` before it count."""
    recent = [t for t in earlier_raises if timedelta(0) <= raised_at - t <= policy.window]
    return len(recent) + 1 >= policy.max_raises


def storm_group(site_alarms: Sequence[tuple[int, datetime, int | None]], raised_at: datetime,
                policy: StormPolicy) -> int | None:
    """The group a new alarm at a site joins: ``site_alarms`` are the site's open alarms as
    (id, raised_at, group_id). The earliest group with a member within ``window`` of
    ``raised_at`` wins; None means the new alarm starts its own group."""
    groups = [group if group is not None else alarm_id
              for alarm_id, at, group in site_alarms
              if abs(raised_at - at) <= policy.window]
    return min(groups) if groups else None
