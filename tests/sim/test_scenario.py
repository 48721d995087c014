"""Scenario files: every shipped story loads, plays at dt = 0.5 s and crosses the thresholds a
dispatcher would see; malformed files are refused naming the file, the event and the field."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from hardware.regmap import load_maps
from hardware.sim import encoders as enc
from hardware.sim.physics import VirtualSensor, make_sensor
from hardware.sim.scenario import (
    SCENARIOS_DIR,
    Scenario,
    ScenarioError,
    ScenarioPlayer,
    list_scenarios,
    load_scenario,
    parse_scenario,
)

MAPS = load_maps()
REQUIRED = {"fire_growing", "flash_flood", "chlorine_dosing_failure", "traffic_pm25_peak",
            "detector_fault", "city_block"}


def threshold(cls: str, name: str) -> float:
    value = MAPS.classes[cls].holding_register(name).default
    assert value is not None
    return value


Trace = list[tuple[float, dict[int, dict[str, float]]]]


def play(scenario: Scenario, dt: float = 0.5,
         probe: Callable[[float, dict[int, tuple[str, VirtualSensor]]], None] | None = None,
         ) -> Trace:
    sensors = scenario.build_sensors(seed=1)
    player = ScenarioPlayer(scenario, sensors)
    trace: Trace = []
    while not player.done:
        player.tick(dt)
        trace.append((player.time, {a: s.truth() for a, (_, s) in sensors.items()}))
        if probe is not None:
            probe(player.time, sensors)
    return trace


def series(trace: Trace, node: int, key: str) -> list[float]:
    return [values[node][key] for _, values in trace]


def crosses_up_then_down(values: list[float], high: float, low: float) -> bool:
    """The value rises above ``high`` and later falls below ``low`` (and ends there)."""
    above = [i for i, v in enumerate(values) if v > high]
    return bool(above) and values[0] < high and values[-1] < low and any(
        v < low for v in values[above[0]:])


# --------------------------------------------------------------------------- shipped files


def test_every_required_scenario_is_shipped() -> None:
    assert set(list_scenarios()) >= REQUIRED


@pytest.mark.parametrize("name", list_scenarios())
def test_scenario_loads_and_is_short(name: str) -> None:
    scenario = load_scenario(name)
    assert scenario.name == name
    assert scenario.title
    assert 0 < scenario.duration <= 180
    assert scenario.time_scale > 0
    assert scenario.events
    assert all(0 <= e.at <= scenario.duration for e in scenario.events)
    assert [e.at for e in scenario.events] == sorted(e.at for e in scenario.events)


def test_fire_growing_alarms_then_clears() -> None:
    scenario = load_scenario("fire_growing")
    trace = play(scenario)
    smoke = series(trace, 1, "smoke")
    assert crosses_up_then_down(smoke, threshold("fire", "smoke_alarm"), 1.0)
    extinguish = next(e.at for e in scenario.events if e.action == "extinguish")
    first_alarm = next(t for (t, _), s in zip(trace, smoke, strict=True)
                       if s > threshold("fire", "smoke_alarm"))
    assert first_alarm < extinguish       # the detector alarms before anyone reacts


def test_flash_flood_passes_every_stage_and_drains() -> None:
    trace = play(load_scenario("flash_flood"))
    level = series(trace, 2, "level")
    stages = [threshold("flood", f"stage{n}") for n in (1, 2, 3)]
    crossings = [next(i for i, v in enumerate(level) if v > s) for s in stages]
    assert crossings == sorted(crossings)
    assert crosses_up_then_down(level, stages[2], stages[0])
    # Rising far faster than the fast-rise alarm (cm/h over one minute of simulated time).
    rise_cm_h = max(level[i + 120] - level[i] for i in range(len(level) - 120)) * 100 * 60
    assert rise_cm_h > threshold("flood", "rise_alarm")


def test_chlorine_dosing_failure_dips_below_the_limit_and_recovers() -> None:
    trace = play(load_scenario("chlorine_dosing_failure"))
    chlorine = series(trace, 3, "chlorine")
    low = threshold("water", "chlorine_low")
    assert min(chlorine) < low
    assert chlorine[0] > low and chlorine[-1] > low
    below = [i for i, v in enumerate(chlorine) if v < low]
    assert below == list(range(below[0], below[-1] + 1))   # one dip, then recovery


def test_traffic_peak_raises_pm25_above_the_alarm_and_back() -> None:
    alarm = threshold("air", "pm25_alarm")
    measured: list[int] = []

    def probe(t: float, sensors: dict[int, tuple[str, VirtualSensor]]) -> None:
        data = bytes.fromhex(sensors[4][1].snapshot()["uart"]["pms"])
        measured.extend(enc.parse_pms5003(data[i : i + 32]).pm25 for i in range(0, len(data), 32))

    trace = play(load_scenario("traffic_pm25_peak"), probe=probe)
    hysteresis = threshold("air", "pm_hysteresis")
    assert crosses_up_then_down(series(trace, 4, "pm2_5"), alarm, alarm - hysteresis)
    assert len(measured) == 140          # one PMS frame per simulated second
    assert max(measured) > alarm and measured[-1] < alarm


def test_detector_fault_opens_the_heat_input_then_recovers() -> None:
    seen: dict[float, dict[str, int]] = {}

    def probe(t: float, sensors: dict[int, tuple[str, VirtualSensor]]) -> None:
        seen[t] = sensors[1][1].snapshot()["adc"]

    trace = play(load_scenario("detector_fault"), probe=probe)
    floor = round(enc.esp32_counts_exact(0.0))    # an open input on the ESP32 ADC
    assert all(seen[t]["heat"] == floor for t in seen if 10 < t <= 70)
    assert all(seen[t]["heat"] > 100 for t in seen if t <= 10 or t > 70)
    assert max(series(trace, 1, "smoke")) < threshold("fire", "smoke_prealarm")
    smoke_noisy = [seen[t]["smoke"] for t in seen if 40 < t <= 55]
    assert max(smoke_noisy) - min(smoke_noisy) > 100


def test_city_block_tells_all_four_stories_at_once() -> None:
    scenario = load_scenario("city_block")
    assert dict(scenario.nodes) == {1: "fire", 2: "flood", 3: "water", 4: "air"}
    nack_seen: list[bool] = []

    def probe(t: float, sensors: dict[int, tuple[str, VirtualSensor]]) -> None:
        nack_seen.append("98" not in sensors[4][1].snapshot()["i2c"])

    trace = play(scenario, probe=probe)
    assert crosses_up_then_down(series(trace, 1, "smoke"), threshold("fire", "smoke_alarm"), 1.0)
    assert crosses_up_then_down(series(trace, 2, "level"), threshold("flood", "stage3"),
                                threshold("flood", "stage1"))
    chlorine = series(trace, 3, "chlorine")
    assert min(chlorine) < threshold("water", "chlorine_low") < chlorine[-1]
    alarm = threshold("air", "pm25_alarm")
    assert crosses_up_then_down(series(trace, 4, "pm2_5"), alarm, alarm)
    assert any(nack_seen) and not nack_seen[-1]


# --------------------------------------------------------------------------- the player


def test_player_applies_each_event_once_in_order() -> None:
    scenario = load_scenario("city_block")
    player = scenario.player()
    assert player.advance(0) == []
    first = player.advance(10)
    assert [e.at for e in first] == [5, 10]
    assert player.advance(10) == []
    assert player.advance(9) == []                   # the clock never goes back
    rest = player.advance(scenario.duration)
    assert len(first) + len(rest) == len(scenario.events)
    assert player.done


def test_class_event_reaches_every_node_of_that_class() -> None:
    scenario = parse_scenario(
        'name = "two_gauges"\ntitle = "t"\nduration = 10\n[nodes]\n5 = "flood"\n6 = "flood"\n'
        '[[event]]\nat = 0\nclass = "flood"\naction = "rain"\n')
    sensors = scenario.build_sensors()
    ScenarioPlayer(scenario, sensors).advance(0)
    assert all(s.truth()["rain"] == 200.0 for _, s in sensors.values())   # default mm_h


def test_player_refuses_sensors_that_do_not_match() -> None:
    scenario = load_scenario("fire_growing")
    with pytest.raises(ScenarioError, match=r"fire_growing\.toml.*event 1.*node 1 is not"):
        ScenarioPlayer(scenario, {2: ("flood", make_sensor("flood"))})
    with pytest.raises(ScenarioError, match="node 1 is a water node"):
        ScenarioPlayer(scenario, {1: ("water", make_sensor("water"))})


# --------------------------------------------------------------------------- malformed files

GOOD_HEAD = 'name = "broken"\ntitle = "Broken"\nduration = 60\n[nodes]\n1 = "fire"\n'
GOOD_EVENT = '[[event]]\nat = 5\nnode = 1\naction = "ignite"\n'


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "broken.toml"
    path.write_text(body, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("second_event", "event", "field", "message"),
    [
        ('[[event]]\nat = 9\nnode = 1\n', 2, "action", "is required"),
        ('[[event]]\nnode = 1\naction = "extinguish"\n', 2, "at", "is required"),
        ('[[event]]\nat = 9\nnode = 1\naction = "detonate"\n', 2, "action",
         "'detonate' is not a fire action"),
        ('[[event]]\nat = 9\nnode = 7\naction = "extinguish"\n', 2, "node",
         "7 is not a node declared"),
        ('[[event]]\nat = 9\nnode = "one"\naction = "extinguish"\n', 2, "node", "not a node"),
        ('[[event]]\nat = 9\nclass = "air"\naction = "traffic_peak"\n', 2, "class",
         "'air' is not a class of any declared node"),
        ('[[event]]\nat = 9\naction = "extinguish"\n', 2, "node", "exactly one of"),
        ('[[event]]\nat = 99\nnode = 1\naction = "extinguish"\n', 2, "at",
         "outside the scenario"),
        ('[[event]]\nat = 9\nnode = 1\naction = "ignite"\nparams = { growth = "fast" }\n', 2,
         "params.growth", "must be a number"),
        ('[[event]]\nat = 9\nnode = 1\naction = "fault"\nparams = { kind = "open", '
         'channel = "level" }\n', 2, "params.channel", "not a fire channel"),
        ('[[event]]\nat = 9\nnode = 1\naction = "extinguish"\nwhen = 3\n', 2, "when",
         "unknown field"),
    ],
)
def test_malformed_event_names_file_event_and_field(
    tmp_path: Path, second_event: str, event: int, field: str, message: str
) -> None:
    path = write(tmp_path, GOOD_HEAD + GOOD_EVENT + second_event)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    err = info.value
    assert err.event == event
    assert err.field == field
    assert str(path) in str(err)
    assert f"event {event}" in str(err)
    assert message in str(err)
    assert err.line is not None and err.line >= 10      # points into the second [[event]]


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (GOOD_HEAD.replace('title = "Broken"\n', ""), "title", "is required"),
        (GOOD_HEAD.replace('"broken"', '"other"'), "name", "does not match the file name"),
        (GOOD_HEAD.replace("60", "-1"), "duration", "must be in"),
        (GOOD_HEAD.replace('1 = "fire"', '300 = "fire"'), "nodes.300", "not a node address"),
        (GOOD_HEAD.replace('1 = "fire"', '1 = "smoke"'), "nodes.1", "not a device class"),
        ("speed = 2\n" + GOOD_HEAD, "speed", "unknown field"),
    ],
)
def test_malformed_header_names_file_and_field(
    tmp_path: Path, body: str, field: str, message: str
) -> None:
    path = write(tmp_path, body + GOOD_EVENT)
    with pytest.raises(ScenarioError, match=message) as info:
        load_scenario(path)
    assert info.value.field == field and info.value.event is None
    assert str(path) in str(info.value)


def test_toml_syntax_error_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD_HEAD + "[[event]\nat = 5\n")
    with pytest.raises(ScenarioError, match=r"broken\.toml: not valid TOML"):
        load_scenario(path)


def test_unknown_scenario_name_lists_the_known_ones() -> None:
    with pytest.raises(ScenarioError, match="fire_growing"):
        load_scenario("no_such_story")


def test_scenarios_dir_is_inside_hardware() -> None:
    assert SCENARIOS_DIR.parent.name == "hardware"
    assert Scenario.load(SCENARIOS_DIR / "flash_flood.toml") == load_scenario("flash_flood")


def test_event_reads_like_a_log_line() -> None:
    event = load_scenario("fire_growing").events[0]
    assert str(event) == "t=5s node 1: ignite(growth=0.05, max_kw=2000.0, smokiness=1.0) - " \
        "A waste bin catches fire"
