"""What the dashboard shows, decided without I/O: a device's one display state, the order of the
alarm board, which telemetry fields are charted with which thresholds, and the outline drawn for
an area. Table-tested in ``tests/web/test_state.py``; the router only feeds these rows.

A device has one display state, the worst that applies, so a glance at a colour is enough:
``alarm`` (an open alarm on it) beats ``fault`` (the device reports a sensor fault) beats
``offline`` and ``unknown`` (no word from it, or its gateway is offline: the last word is not a
promise) beats ``ok``. A site takes the worst state of its devices.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["CHART_THRESHOLDS", "SEVERITY_RANK", "STATE_RANK", "AlarmOrderKey", "ChartField",
           "alarm_order_key", "area_hulls", "chart_fields", "device_state", "hull",
           "worst_state"]

#: Display states, best first.
STATE_RANK = {"ok": 0, "unknown": 1, "offline": 2, "fault": 3, "alarm": 4}

#: Alarm severities as the register maps name them, most severe first on the board.
SEVERITY_RANK = {"critical": 0, "major": 1, "warning": 2, "minor": 3}
_UNRANKED = len(SEVERITY_RANK)


def device_state(connectivity: str, faults: Sequence[str], open_alarm: bool) -> str:
    """The one colour a device gets on the map and in lists."""
    if open_alarm:
        return "alarm"
    if faults:
        return "fault"
    if connectivity == "offline":
        return "offline"
    if connectivity != "online":
        return "unknown"
    return "ok"


def worst_state(states: Iterable[str]) -> str:
    """A site's colour: the worst of its devices' (``unknown`` for a site with none)."""
    return max(states, key=lambda s: STATE_RANK.get(s, 0), default="unknown")


AlarmOrderKey = tuple[int, int, float, int]


def alarm_order_key(state: str, severity: str | None, raised_ts: float,
                    alarm_id: int) -> AlarmOrderKey:
    """Sort key of the alarm board: unacknowledged first, then most severe, then newest.

    The same rule is applied in the page (``static/js/alarms.js``) to rows arriving live."""
    return (0 if state == "raised" else 1 if state == "acknowledged" else 2,
            SEVERITY_RANK.get(severity or "", _UNRANKED), -raised_ts, -alarm_id)


@dataclass(frozen=True)
class ChartField:
    """One charted telemetry field and the holding registers drawn on it as threshold lines."""

    field: str
    thresholds: tuple[str, ...]


#: Per device class: the telemetry fields worth a chart, and their threshold registers (names
#: from ``hardware/registers/<class>.toml``; a hysteresis is not a line worth drawing).
CHART_THRESHOLDS: dict[str, tuple[ChartField, ...]] = {
    "fire": (ChartField("smoke", ("smoke_alarm", "smoke_prealarm")),
             ChartField("temperature", ("heat_fixed",)),
             ChartField("heat_rise_rate", ("heat_rise",))),
    "flood": (ChartField("level", ("stage1", "stage2", "stage3")),
              ChartField("level_rate", ("rise_alarm",))),
    "water": (ChartField("pressure", ("pressure_low", "pressure_high")),
              ChartField("ph", ("ph_low", "ph_high")),
              ChartField("turbidity", ("turbidity_high",)),
              ChartField("chlorine", ("chlorine_low", "chlorine_high"))),
    "air": (ChartField("pm2_5", ("pm25_alarm",)),
            ChartField("pm10", ("pm10_alarm",)),
            ChartField("co2", ("co2_alarm",)),
            ChartField("aqi_vn", ("aqi_alarm",))),
}


def chart_fields(device_class: str) -> tuple[ChartField, ...]:
    return CHART_THRESHOLDS.get(device_class, ())


Point = tuple[float, float]


def hull(points: Iterable[Point]) -> list[Point]:
    """Convex hull (Andrew's monotone chain), counter-clockwise, no repeated first point.

    The map outlines an area the registry has no boundary for by the hull of its sites (fewer
    than three distinct sites: the points themselves)."""
    pts = sorted(set(points))
    if len(pts) < 3:
        return pts

    def cross(o: Point, a: Point, b: Point) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[Point] = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list[Point] = []
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return lower[:-1] + upper[:-1]


def area_hulls(areas: Iterable[tuple[int, str, bool]],
               positions: Mapping[int, Sequence[Point]]) -> dict[int, list[Point]]:
    """The hull drawn for each area the registry has no outline for: ``areas`` are (id,
    materialised path, has an outline), ``positions`` the sites' points by area id.

    An area is outlined by the sites anywhere below it, except those inside a sub-area that has
    its own outline: that outline already shows where they are, and a hull drawn across the
    boundaries of outlined wards would only clutter them (a city whose wards are all outlined
    gets no hull). Areas with an outline get none."""
    rows = list(areas)
    outlined = {path for _id, path, has in rows if has}
    # For each area, the outlined areas it lies in (itself included): a few, one per level.
    covered = {path: [p for p in outlined if path.startswith(p)] for _id, path, _has in rows}
    hulls: dict[int, list[Point]] = {}
    for area_id, path, has in rows:
        if has:
            continue
        free = [i for i, sub, _h in rows if sub.startswith(path)
                and not any(len(p) > len(path) for p in covered[sub])]
        hulls[area_id] = hull(pt for i in free for pt in positions.get(i, ()))
    return hulls
