"""Scenario files: a story told to the virtual sensors, event by event, on a simulated clock.

This module owns the scenario format (``hardware/scenarios/<name>.toml``), its loader, which
checks every event against the target class's action table before anything runs and reports
problems as :class:`ScenarioError` naming the file, line, event and field, and
:class:`ScenarioPlayer`, which applies each event once when the clock reaches it.

Format::

    name = "fire_growing"          # must match the file name
    title = "Fire growing in room 3"
    description = "..."            # optional
    duration = 150                 # simulated seconds
    time_scale = 4                 # optional: simulated seconds per wall-clock second at which
                                   # a live run still reads right to the firmware (default 1)
    [nodes]                        # Modbus address -> device class
    1 = "fire"

    [[event]]
    at = 5                         # simulated seconds from the start
    node = 1                       # or: class = "fire" (every node of that class)
    action = "ignite"              # see the class's ACTIONS table in hardware.sim.physics
    params = { growth = 0.05 }     # optional
    note = "A waste bin catches"   # optional, shown by players
"""

from __future__ import annotations

import logging
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hardware.sim.physics import SENSOR_CLASSES, ParamValue, VirtualSensor, make_sensor
from hardware.sim.physics import validate_action as _validate_action

__all__ = [
    "SCENARIOS_DIR",
    "Event",
    "Scenario",
    "ScenarioError",
    "ScenarioPlayer",
    "list_scenarios",
    "load_scenario",
    "parse_scenario",
]

log = logging.getLogger(__name__)

SCENARIOS_DIR = Path(__file__).resolve().parent.parent / "scenarios"
_TOP_FIELDS = {"name", "title", "description", "duration", "time_scale", "nodes", "event"}
_EVENT_FIELDS = {"at", "node", "class", "action", "params", "note"}
_MAX_DURATION_S = 24 * 3600.0

Sensors = Mapping[int, tuple[str, VirtualSensor]]


class ScenarioError(ValueError):
    """A scenario is malformed or does not fit the sensors it is played on.

    ``source`` is the file (or a label), ``event`` the 1-based position of the ``[[event]]``
    in that file (None for top-level problems), ``field`` the offending key.
    """

    def __init__(self, source: str, message: str, *, event: int | None = None,
                 field: str | None = None, line: int | None = None) -> None:
        self.source = source
        self.event = event
        self.field = field
        self.line = line
        where = f"{source}:{line}" if line else source
        parts = [where]
        if event is not None:
            parts.append(f"event {event}")
        if field is not None:
            parts.append(field)
        super().__init__(": ".join([*parts, message]))


@dataclass(frozen=True)
class Event:
    """One scenario event, validated; ``params`` carries the defaults filled in."""

    index: int                      # 1-based position among the file's [[event]] tables
    at: float
    action: str
    params: Mapping[str, ParamValue] = field(default_factory=dict)
    node: int | None = None         # None: every node of class_name
    class_name: str = ""            # the target's device class (also set for node events)
    note: str = ""

    @property
    def target(self) -> str:
        return f"node {self.node}" if self.node is not None else f"class {self.class_name}"

    def describe(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params.items())
        text = f"t={self.at:g}s {self.target}: {self.action}({args})"
        return f"{text} - {self.note}" if self.note else text

    def __str__(self) -> str:
        return self.describe()


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    duration: float
    nodes: Mapping[int, str]
    events: tuple[Event, ...]
    time_scale: float = 1.0
    description: str = ""
    source: str = "<scenario>"

    @classmethod
    def load(cls, name_or_path: str | Path) -> Scenario:
        """Same as :func:`load_scenario` (a name from hardware/scenarios or a path)."""
        return load_scenario(name_or_path)

    def build_sensors(self, seed: int = 0) -> dict[int, tuple[str, VirtualSensor]]:
        """One fresh virtual sensor per declared node (seeded ``seed + address``)."""
        return {addr: (cls, make_sensor(cls, seed + addr)) for addr, cls in self.nodes.items()}

    def player(self, sensors: Sensors | None = None, seed: int = 0) -> ScenarioPlayer:
        return ScenarioPlayer(self, sensors if sensors is not None else self.build_sensors(seed))


# --------------------------------------------------------------------------- loading


def list_scenarios(directory: Path = SCENARIOS_DIR) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.toml"))


def load_scenario(name_or_path: str | Path, directory: Path = SCENARIOS_DIR) -> Scenario:
    """Load ``hardware/scenarios/<name>.toml`` or an explicit path."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = directory / f"{name_or_path}.toml"
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        known = ", ".join(list_scenarios(directory))
        raise ScenarioError(source, f"cannot read: {exc.strerror} (known: {known})") from exc
    return parse_scenario(text, source, expected_name=path.stem)


def parse_scenario(text: str, source: str = "<scenario>",
                   expected_name: str | None = None) -> Scenario:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(source, f"not valid TOML: {exc}") from exc
    return _Parser(text, source).scenario(doc, expected_name)


class _Parser:
    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.lines = text.splitlines()
        self.event_lines = [n for n, line in enumerate(self.lines, 1)
                            if re.match(r"\s*\[\[\s*event\s*\]\]", line)]

    def _line_of(self, key: str, event: int | None = None) -> int | None:
        """Best-effort line of ``key = ...`` (inside the event's table when given)."""
        start, stop = 0, len(self.lines)
        if event is not None:
            if event > len(self.event_lines):
                return None
            start = self.event_lines[event - 1]
            stop = self.event_lines[event] - 1 if event < len(self.event_lines) else stop
        pattern = re.compile(rf"\s*\"?{re.escape(key)}\"?\s*=")
        for n in range(start, stop):
            if pattern.match(self.lines[n]):
                return n + 1
        return self.event_lines[event - 1] if event is not None else None

    def error(self, message: str, *, event: int | None = None,
              key: str | None = None) -> ScenarioError:
        line = self._line_of(key.split(".")[0], event) if key else (
            self.event_lines[event - 1] if event and event <= len(self.event_lines) else None)
        return ScenarioError(self.source, message, event=event, field=key, line=line)

    def _number(self, value: object, key: str, event: int | None = None) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
                value):
            raise self.error(f"must be a number, got {value!r}", event=event, key=key)
        return float(value)

    def _text(self, value: object, key: str, event: int | None = None) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.error(f"must be a non-empty string, got {value!r}", event=event, key=key)
        return value

    def scenario(self, doc: dict[str, Any], expected_name: str | None) -> Scenario:
        unknown = sorted(set(doc) - _TOP_FIELDS)
        if unknown:
            raise self.error(f"unknown field (known: {', '.join(sorted(_TOP_FIELDS))})",
                             key=unknown[0])
        for key in ("name", "title", "duration", "nodes"):
            if key not in doc:
                raise self.error("is required", key=key)
        name = self._text(doc["name"], "name")
        if expected_name is not None and name != expected_name:
            raise self.error(f"{name!r} does not match the file name {expected_name!r}",
                             key="name")
        title = self._text(doc["title"], "title")
        description = doc.get("description", "")
        if not isinstance(description, str):
            raise self.error("must be a string", key="description")
        duration = self._number(doc["duration"], "duration")
        if not 0 < duration <= _MAX_DURATION_S:
            raise self.error(f"must be in (0, {_MAX_DURATION_S:g}] s, got {duration:g}",
                             key="duration")
        time_scale = self._number(doc.get("time_scale", 1.0), "time_scale")
        if time_scale <= 0:
            raise self.error(f"must be positive, got {time_scale:g}", key="time_scale")
        nodes = self._nodes(doc["nodes"])
        raw_events = doc.get("event", [])
        if not isinstance(raw_events, list):
            raise self.error("must be an array of tables ([[event]])", key="event")
        events = [self._event(raw, i, duration, nodes) for i, raw in enumerate(raw_events, 1)]
        events.sort(key=lambda e: e.at)   # stable: file order among events at the same time
        return Scenario(name=name, title=title, duration=duration, nodes=nodes,
                        events=tuple(events), time_scale=time_scale,
                        description=description, source=self.source)

    def _nodes(self, raw: object) -> dict[int, str]:
        if not isinstance(raw, dict) or not raw:
            raise self.error('must be a table of address = "class", e.g. 1 = "fire"',
                             key="nodes")
        nodes: dict[int, str] = {}
        for key, cls in raw.items():
            try:
                addr = int(key)
            except ValueError:
                addr = -1
            if not 1 <= addr <= 247:
                raise self.error(f"{key!r} is not a node address 1-247", key=f"nodes.{key}")
            if cls not in SENSOR_CLASSES:
                raise self.error(f"{cls!r} is not a device class "
                                 f"(known: {', '.join(SENSOR_CLASSES)})", key=f"nodes.{key}")
            nodes[addr] = cls
        return nodes

    def _event(self, raw: object, index: int, duration: float, nodes: dict[int, str]) -> Event:
        if not isinstance(raw, dict):
            raise self.error("must be a table", event=index)
        unknown = sorted(set(raw) - _EVENT_FIELDS)
        if unknown:
            raise self.error(f"unknown field (known: {', '.join(sorted(_EVENT_FIELDS))})",
                             event=index, key=unknown[0])
        for key in ("at", "action"):
            if key not in raw:
                raise self.error("is required", event=index, key=key)
        at = self._number(raw["at"], "at", index)
        if not 0 <= at <= duration:
            raise self.error(f"{at:g} s is outside the scenario (0-{duration:g} s)",
                             event=index, key="at")
        node: int | None = None
        if ("node" in raw) == ("class" in raw):
            raise self.error("give exactly one of node = <address> or class = \"<class>\"",
                             event=index, key="node")
        if "node" in raw:
            value = raw["node"]
            if isinstance(value, bool) or not isinstance(value, int) or value not in nodes:
                declared = ", ".join(str(a) for a in sorted(nodes))
                raise self.error(f"{value!r} is not a node declared in [nodes] "
                                 f"(declared: {declared})", event=index, key="node")
            node, class_name = value, nodes[value]
        else:
            value = raw["class"]
            if value not in set(nodes.values()):
                declared = ", ".join(sorted(set(nodes.values())))
                raise self.error(f"{value!r} is not a class of any declared node "
                                 f"(declared: {declared})", event=index, key="class")
            class_name = value
        action = self._text(raw["action"], "action", index)
        params = raw.get("params", {})
        if not isinstance(params, dict):
            raise self.error("must be a table, e.g. { growth = 0.05 }", event=index,
                             key="params")
        try:
            checked = _validate_action(class_name, action, params)
        except ValueError as exc:
            key = "action" if str(exc).startswith("action") else str(exc).split(" ")[0]
            raise self.error(str(exc).removeprefix(f"{key} "), event=index, key=key) from None
        note = raw.get("note", "")
        if not isinstance(note, str):
            raise self.error("must be a string", event=index, key="note")
        return Event(index=index, at=at, action=action, params=checked, node=node,
                     class_name=class_name, note=note)


# --------------------------------------------------------------------------- playing


class ScenarioPlayer:
    """Applies a scenario's events to live sensors, each exactly once, in time order.

    Either drive it from your own clock with :meth:`advance` (stepping the sensors yourself),
    or let :meth:`tick` do both: apply what is due now, then step every sensor by ``dt_s``.
    """

    def __init__(self, scenario: Scenario, sensors: Sensors) -> None:
        self.scenario = scenario
        self.sensors = sensors
        self.time = 0.0
        self._next = 0
        for event in scenario.events:
            if event.node is None:
                if not any(cls == event.class_name for cls, _ in sensors.values()):
                    log.warning("%s: event %d targets class %s but no such node is simulated",
                                scenario.source, event.index, event.class_name)
                continue
            if event.node not in sensors:
                raise ScenarioError(scenario.source, f"node {event.node} is not simulated "
                                    f"(nodes: {', '.join(map(str, sorted(sensors)))})",
                                    event=event.index, field="node")
            cls = sensors[event.node][0]
            if cls != event.class_name:
                raise ScenarioError(scenario.source, f"node {event.node} is a {cls} node, "
                                    f"the scenario expects {event.class_name}",
                                    event=event.index, field="node")

    @property
    def pending(self) -> tuple[Event, ...]:
        return self.scenario.events[self._next :]

    @property
    def done(self) -> bool:
        return self._next >= len(self.scenario.events) and self.time >= self.scenario.duration

    def _targets(self, event: Event) -> list[VirtualSensor]:
        if event.node is not None:
            return [self.sensors[event.node][1]]
        return [sensor for cls, sensor in self.sensors.values() if cls == event.class_name]

    def advance(self, t_s: float) -> list[Event]:
        """Apply every event due by ``t_s`` (each once) and return them in order."""
        self.time = max(self.time, t_s)
        applied: list[Event] = []
        events = self.scenario.events
        while self._next < len(events) and events[self._next].at <= self.time + 1e-9:
            event = events[self._next]
            self._next += 1
            for sensor in self._targets(event):
                sensor.apply(event.action, event.params)
            log.info("scenario %s: %s", self.scenario.name, event.describe())
            applied.append(event)
        return applied

    def tick(self, dt_s: float) -> list[Event]:
        """Apply the events due now, then step every (distinct) sensor by ``dt_s``."""
        applied = self.advance(self.time)
        seen: set[int] = set()
        for _, sensor in self.sensors.values():
            if id(sensor) not in seen:
                seen.add(id(sensor))
                sensor.step(dt_s)
        self.time += dt_s
        return applied
