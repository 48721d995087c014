"""Flapping suppression and storm grouping, as pure functions over times and ids.

Flapping: a detector that raises the same alarm type again and again (a dusty smoke chamber, a
float switch in waves) buries real alarms. From the ``max_raises``-th raise of one (device,
type) within ``window``, the alarm is marked flapping: it is kept and shown, but it does not
notify on its own (the dashboard shows it muted, the feed flags it).

Storm grouping: when many alarms arrive at one site within ``window`` (a fire sets off every
detector on a floor), they join one group, led by the first alarm's id, so people get one grouped
notification while every member is kept.

Correlation: alarms of complementary types at one site (smoke and heat; a high level and a fast
rise) raise one confirmed alarm (see :data:`CORRELATIONS`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["CORRELATIONS", "CorrelationRule", "FlapPolicy", "StormPolicy", "correlate",
           "is_flapping", "storm_group"]


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


# -- correlation within a site -----------------------------------------------------------------
@dataclass(frozen=True)
class CorrelationRule:
    """Raise ``name`` when a site has an active alarm of each of ``needs`` (each a set of alarm
    types, any one of which counts) raised within ``window`` of each other."""

    name: str
    needs: tuple[frozenset[str], ...]
    window: timedelta
    severity: str = "critical"


#: Said once, as data: smoke plus heat is a fire, not a dusty detector; a high level that is
#: still rising fast is a flood, not a stuck float.
CORRELATIONS: tuple[CorrelationRule, ...] = (
    CorrelationRule("confirmed_fire", (frozenset({"smoke"}),
                                       frozenset({"heat_fixed", "heat_rise"})),
                    timedelta(minutes=5)),
    CorrelationRule("confirmed_flood", (frozenset({"stage2", "stage3"}),
                                        frozenset({"fast_rise"})),
                    timedelta(minutes=10)),
)


def correlate(active: Sequence[tuple[str, datetime]],
              rules: Sequence[CorrelationRule] = CORRELATIONS) -> list[CorrelationRule]:
    """The rules that the site's active alarms (type, raised_at) satisfy: one alarm per need,
    all raised within the rule's window of each other."""
    fired = []
    for rule in rules:
        times = [sorted(t for kind, t in active if kind in need) for need in rule.needs]
        if not all(times):
            continue
        # Some choice of one alarm per need fits in the window iff, for some alarm taken as the
        # earliest, every need has an alarm in [that time, that time + window].
        starts = sorted(t for ts in times for t in ts)
        if any(all(any(start <= t <= start + rule.window for t in ts) for ts in times)
               for start in starts):
            fired.append(rule)
    return fired
