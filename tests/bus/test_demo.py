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

import pytest

from edgefleet.demo import NodeState, format_readings, format_value
from hardware.regmap import load_maps
from hardware.sim.simbus import SimError, micropython_executable


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
