"""``edgefleet demo``: four real firmware nodes on one simulated bus, polled and shown.

The end-to-end test runs the command as a technician would, piped (so it prints plain lines
instead of the live view), for 25 s of the city_block scenario: the storm, the fire and the
traffic peak have all started by then.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edgefleet.demo import (
    RATE_READINGS,
    NodeState,
    demo_time_scale,
    format_readings,
    format_value,
)
from hardware.regmap import load_maps
from hardware.sim.scenario import Scenario
from hardware.sim.simbus import SimError, micropython_executable
from hardware.sim.simrun import find_scenario


def _micropython_or_skip() -> None:
    try:
        micropython_executable()
    except SimError as exc:
        pytest.skip(str(exc))


def test_demo_polls_every_node_and_shows_readings() -> None:
    _micropython_or_skip()
    env = dict(os.environ, PYTHONIOENCODING="utf-8", NO_COLOR="1")
    proc = subprocess.run(
        [sys.executable, "-m", "edgefleet.cli", "demo", "--console", "--duration", "25"],
        capture_output=True, text=True, encoding="utf-8", timeout=90, env=env)
    out = proc.stdout
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{proc.stderr}"

    summary = out[out.index("Summary / Tóm tắt"):]
    for address, cls in ((1, "fire"), (2, "flood"), (3, "water"), (4, "air")):
        m = re.search(rf"node {address} {cls}\s+polls (\d+) ok / (\d+) failed", summary)
        assert m, f"node {address} {cls} missing from the summary:\n{summary}"
        ok, failed = int(m[1]), int(m[2])
        assert ok >= 15, f"node {address}: only {ok} good polls in 25 s\n{out}"
        assert failed <= 2, f"node {address}: {failed} failed polls\n{out}"

    # readings with their units, per class
    for text in ("smoke", "%/m", "°C", "level", " m,", "bar", "pH", "NTU", "mg/L",
                 "PM2.5", "µg/m³", "ppm", "VN AQI", "US AQI"):
        assert text in out, f"{text!r} not shown\n{out}"
    assert "OK / BÌNH THƯỜNG" in out
    # the scenario's story reaches the event log, and the storm raises the flood node's alarms
    assert "Storm cell arrives" in out
    assert "A waste bin catches fire" in out
    assert re.search(r"node 2 flood: stage1 raised", out), out


def test_readings_carry_units_and_clipping() -> None:
    maps = load_maps()
    air = maps.classes["air"]
    text = format_readings("air", air, {"pm2_5": 35.0, "pm10": 52.0, "co2": 620.0,
                                        "aqi_vn": 98.0, "aqi_us": 101.0})
    assert text == ["PM2.5 35 µg/m³", "PM10 52 µg/m³", "CO2 620 ppm", "VN AQI 98",
                    "US AQI 101"]
    flood = maps.classes["flood"]
    rate = flood.input_register("level_rate")
    assert format_value(rate, 12.5) == "12.5"
    assert format_value(rate, 3276.7) == "≥3276.7"       # i16 full scale: the node clipped it
    assert format_value(rate, -3276.8) == "≤-3276.8"
    assert format_readings("flood", flood, {"level": 1.2, "flood_stage": 2.0}) == [
        "level 1.20 m", "stage alert II"]
    water = maps.classes["water"]
    assert format_readings("water", water, {"ph": 7.2})[0] == "pH 7.20"   # no "pH pH"


def test_node_state_classification() -> None:
    cmap = load_maps().classes["fire"]
    node = NodeState(1, "fire", cmap)
    assert node.classify() == "starting"
    node.answered = True
    assert node.classify() == "ok"
    node.status = {"warning"}
    assert node.classify() == "warning"
    node.status = {"fault", "warning"}
    assert node.classify() == "fault"
    node.status = {"alarm", "fault", "latched"}
    assert node.classify() == "alarm"
    node.misses = 2
    assert node.classify() == "offline"


def test_the_demo_runs_in_real_time_when_a_node_reads_a_rate() -> None:
    # city_block is written for x2, but its flood gauge and fire detector measure rates on
    # their own clocks: at x2 the street flooded before the gauge could report any rise.
    city = Scenario.load(find_scenario("city_block"))
    assert city.time_scale == 2
    assert demo_time_scale(city, ("fire", "flood", "water", "air")) == 1.0
    assert demo_time_scale(city, ("flood",)) == 1.0
    traffic = Scenario.load(find_scenario("traffic_pm25_peak"))
    assert demo_time_scale(traffic, ("air", "water")) == traffic.time_scale == 4


def test_a_rate_the_node_has_not_measured_yet_is_not_shown_as_zero() -> None:
    flood = load_maps().classes["flood"]
    young = format_readings("flood", flood, {"level": 0.6, "level_rate": 0.0, "uptime": 12.0})
    assert young == ["level 0.60 m", "rate — (after 50 s)"]
    grown = format_readings("flood", flood, {"level": 0.6, "level_rate": 84.5, "uptime": 61.0})
    assert grown == ["level 0.60 m", "rate 84.5 cm/h"]
    fire = load_maps().classes["fire"]
    assert format_readings("fire", fire, {"heat_rise_rate": 0.0, "uptime": 3.0}) == [
        "rise — (after 20 s)"]


@pytest.mark.parametrize("cls", sorted(RATE_READINGS))
def test_the_demo_knows_how_much_history_the_firmware_needs(firmware_path: Path,
                                                              cls: str) -> None:
    module = __import__(f"app.classes.{cls}", fromlist=["DEFAULTS"])
    register, history_s = RATE_READINGS[cls]
    assert module.DEFAULTS["rise_min_span_ms"] == history_s * 1000
    assert register in {r.name for r in load_maps().classes[cls].input}


@pytest.mark.slow
def test_the_demo_shows_the_flash_flood_rising() -> None:
    # 70 s of real time: past the gauge's 50 s of history, with the storm's rise in its window.
    _micropython_or_skip()
    env = dict(os.environ, PYTHONIOENCODING="utf-8", NO_COLOR="1")
    proc = subprocess.run(
        [sys.executable, "-m", "edgefleet.cli", "demo", "--console", "--duration", "70"],
        capture_output=True, text=True, encoding="utf-8", timeout=150, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # (a flash flood outruns the register's full scale: "≥3276.7" is the node's clipped rate)
    rates = [float(m) for m in re.findall(r"rate [≥≤]?(-?\d+\.\d) cm/h", proc.stdout)]
    assert rates and max(rates) >= 30.0, proc.stdout  # the fast-rise threshold is 30 cm/h
    assert "rate — (after 50 s)" in proc.stdout  # and before the gauge had the history: no 0.0
    assert re.search(r"node 2 flood: fast_rise raised", proc.stdout), proc.stdout
    assert "time scale x1 (real time" in proc.stdout
