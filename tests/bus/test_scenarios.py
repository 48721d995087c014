"""Each sensor class, driven by its scenario file, goes into alarm and back out, seen only
through Modbus registers, as the gateway will see it. The scenarios run side by side, one bus
each, at the time scale their files recommend; the flood gauge's bus is on duty from the start
of the session, so that it has its minute of history when the storm comes (conftest.py)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from hardware.sim.scenario import Scenario
from hardware.sim.simbus import SimBus
from hardware.sim.simrun import attach_physics, find_scenario
from tests.bus.conftest import MAPS, ON_DUTY, STATUS, Master, bits, wait_answering
from tests.conftest import wait_for


@dataclass
class Run:
    """Poll one node through a whole scenario and keep every decoded sample."""

    scenario: str
    address: int = 0
    samples: list[dict[str, float]] = field(default_factory=list)
    resets: int = 0
    error: str = ""

    def alarms(self, cls: str) -> list[set[str]]:
        table = MAPS.classes[cls].alarm_bits
        return [bits(s["alarm_bits"], table) for s in self.samples]

    def faults(self, cls: str) -> list[set[str]]:
        table = MAPS.classes[cls].fault_bits
        return [bits(s["fault_bits"], table) for s in self.samples]

    def play(self) -> Run:
        sc = Scenario.load(find_scenario(self.scenario))
        nodes = [(int(a), c) for a, c in sc.nodes.items()]
        self.address, cls = nodes[0]
        on_duty = ON_DUTY.pop(self.scenario, None)  # started with the session (conftest.py)
        if on_duty is not None:
            sim, feed = on_duty
        else:
            sim = SimBus(nodes)
            feed = attach_physics(sim, None, time_scale=sc.time_scale)
            sim.start()
        master = Master(sim.master_path)
        try:
            wait_answering(master, self.address)
            if cls == "flood":
                # A gauge judges its rate of rise over a minute or more of history (sensor noise
                # is ±1 cm); give it that minute before the storm, as a real gauge would have.
                # (A gauge on duty since the session started has it already.)
                wait_for(lambda: master.values(self.address)["uptime"] >= 52, 90,
                         what="a minute of flood-gauge history")
            feed.start_scenario(sc)  # the story starts once the node is up
            end = time.monotonic() + (sc.duration + 20) / sc.time_scale
            while time.monotonic() < end:
                values = master.try_values(self.address)
                if values is not None:
                    values["sim_time"] = feed.sim_time
                    self.samples.append(values)
                    latched = int(values["status"]) >> STATUS["latched"] & 1
                    # The fire officer resets the panel once the room is clear of smoke.
                    if cls == "fire" and latched and feed.player and feed.player.done \
                            and feed.truth(self.address)["smoke"] < 0.5:
                        master.write(self.address, 0, MAPS.commands["reset"])
                        self.resets += 1
                time.sleep(0.4)
        except Exception as exc:  # reported by the test, with the scenario's name
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            master.close()
            sim.stop()
        return self


_lock = threading.Lock()
_runs: dict[str, Run] = {}


def _played(name: str) -> Run:
    """Play all five scenarios once, in parallel, on first use."""
    with _lock:
        if not _runs:
            names = ["fire_growing", "flash_flood", "chlorine_dosing_failure",
                     "traffic_pm25_peak", "detector_fault"]
            with ThreadPoolExecutor(len(names)) as pool:
                for run in pool.map(lambda n: Run(n).play(), names):
                    _runs[run.scenario] = run
    run = _runs[name]
    assert not run.error, f"{name}: {run.error}"
    assert len(run.samples) > 20, f"{name}: only {len(run.samples)} polls answered"
    return run


def _raised_then_cleared(run: Run, seen: list[set[str]], name: str) -> None:
    first = next((i for i, s in enumerate(seen) if name in s), None)
    assert first is not None, f"{run.scenario}: {name} never raised"
    assert name not in seen[-1], f"{run.scenario}: {name} still active at the end"
    status = [int(s["status"]) for s in run.samples]
    assert any(st >> STATUS["alarm"] & 1 or st >> STATUS["warning"] & 1 for st in status)
    assert run.samples[-1]["alarm_seq"] > run.samples[0]["alarm_seq"]


def test_fire_growing_in_a_room_latches_an_alarm_until_the_officer_resets() -> None:
    run = _played("fire_growing")
    seen = run.alarms("fire")
    assert any("smoke" in s for s in seen), "smoke alarm never raised"
    assert any("prealarm" in s for s in seen[: next(i for i, s in enumerate(seen)
                                                    if "smoke" in s) + 1]), \
        "the pre-alarm should come first"
    states = [int(s["fire_state"]) for s in run.samples]
    assert 2 in states
    assert run.resets >= 1, "the alarm should stay latched until reset"
    _raised_then_cleared(run, seen, "smoke")
    assert run.samples[-1]["fire_state"] == 0
    assert not int(run.samples[-1]["status"]) >> STATUS["latched"] & 1


def test_flash_flood_passes_every_stage_and_recedes() -> None:
    run = _played("flash_flood")
    seen = run.alarms("flood")
    stages = [int(s["flood_stage"]) for s in run.samples]
    assert max(stages) == 3
    assert stages.index(1) < stages.index(2) < stages.index(3), "stages out of order"
    assert any("fast_rise" in s for s in seen)
    _raised_then_cleared(run, seen, "stage3")
    assert stages[-1] == 0 and not seen[-1]


def test_chlorine_dosing_failure_raises_low_chlorine_and_recovers() -> None:
    run = _played("chlorine_dosing_failure")
    seen = run.alarms("water")
    _raised_then_cleared(run, seen, "chlorine_low")
    assert min(s["chlorine"] for s in run.samples) < 0.2
    assert run.samples[-1]["chlorine"] > 0.2


def test_traffic_hour_pm25_peak_raises_and_clears_the_air_alarm() -> None:
    run = _played("traffic_pm25_peak")
    seen = run.alarms("air")
    _raised_then_cleared(run, seen, "pm25_high")
    assert max(s["pm2_5"] for s in run.samples) > 55
    assert max(s["aqi_us"] for s in run.samples) > 150


def test_a_detector_going_faulty_reports_a_fault_and_never_a_false_fire() -> None:
    run = _played("detector_fault")
    faults = run.faults("fire")
    assert any("heat_open" in f for f in faults), "the open heat sensor was never reported"
    assert not faults[-1], f"faults still active at the end: {faults[-1]}"
    assert not any(s & {"smoke", "heat_fixed", "heat_rise"} for s in run.alarms("fire")), \
        "a faulty detector must not raise a fire alarm"
