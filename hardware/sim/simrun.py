"""Drive a SimBus from virtual sensors and an optional scenario: the simulator's default feed."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hardware.sim.physics import VirtualSensor, make_sensor
from hardware.sim.scenario import Event, Scenario, ScenarioPlayer
from hardware.sim.simbus import SimBus

log = logging.getLogger(__name__)

SCENARIOS_DIR = Path(__file__).resolve().parents[1] / "scenarios"


def find_scenario(name_or_path: str) -> Path:
    """A scenario by file path or by name from hardware/scenarios."""
    path = Path(name_or_path)
    if path.exists():
        return path
    candidate = SCENARIOS_DIR / f"{name_or_path}.toml"
    if candidate.exists():
        return candidate
    names = ", ".join(sorted(p.stem for p in SCENARIOS_DIR.glob("*.toml")))
    raise FileNotFoundError(f"no scenario {name_or_path!r}; known scenarios: {names}")


class PhysicsFeed:
    """Steps one virtual sensor per node in simulated time and plays a scenario over them.

    Simulated time runs at ``time_scale`` times real time. Keep it at 1 when the firmware's
    rate-of-rise logic matters: the firmware measures rates against its own clock.
    """

    def __init__(self, nodes: list[tuple[int, str]], scenario: Scenario | None = None,
                 time_scale: float = 1.0, seed: int = 0,
                 on_event: Callable[[float, Event], None] | None = None):
        self.sensors: dict[int, tuple[str, VirtualSensor]] = {}
        for i, (address, cls) in enumerate(nodes):
            if address not in self.sensors:  # two nodes on one address share the physics
                self.sensors[address] = (cls, make_sensor(cls, seed=seed + i))
        self.player = ScenarioPlayer(scenario, self.sensors) if scenario else None
        self.time_scale = time_scale
        self.on_event = on_event
        self.sim_time = 0.0
        self._last_real: float | None = None
        self._lock = threading.Lock()

    def __call__(self, real_t: float) -> dict[int, dict[str, Any]]:
        with self._lock:
            dt = 0.0 if self._last_real is None else (real_t - self._last_real) * self.time_scale
            self._last_real = real_t
            self.sim_time += dt
            if self.player is not None:
                for event in self.player.advance(self.sim_time):
                    log.info("scenario t=%.1fs: %s", self.sim_time, event)
                    if self.on_event:
                        self.on_event(self.sim_time, event)
            out = {}
            for address, (_cls, sensor) in self.sensors.items():
                sensor.step(dt)
                out[address] = sensor.snapshot()
            return out

    def start_scenario(self, scenario: Scenario) -> None:
        """Start (or restart) a scenario now: its clock begins at zero."""
        with self._lock:
            self.player = ScenarioPlayer(scenario, self.sensors)
            self.sim_time = 0.0

    def apply(self, address: int, action: str, params: dict[str, Any] | None = None) -> None:
        """Act on one node's physics now (tests, the demo's keyboard)."""
        with self._lock:
            self.sensors[address][1].apply(action, params or {})

    def truth(self, address: int) -> dict[str, float]:
        with self._lock:
            return self.sensors[address][1].truth()


def attach_physics(bus: SimBus, scenario: str | None = None, time_scale: float = 1.0,
                   seed: int = 0,
                   on_event: Callable[[float, Event], None] | None = None) -> PhysicsFeed:
    loaded = Scenario.load(find_scenario(scenario)) if scenario else None
    feed = PhysicsFeed([(n.address, n.cls) for n in bus.nodes], loaded, time_scale, seed, on_event)
    bus.feed = feed
    return feed
