"""Virtual sensors: physics a technician would recognise, the raw-feed contract, faults."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hardware.regmap import load_maps, load_sensors
from hardware.sim import encoders as enc
from hardware.sim.physics import (
    AirSensor,
    FireSensor,
    FloodSensor,
    VirtualSensor,
    WaterSensor,
    make_sensor,
    validate_action,
)

MAPS = load_maps()
SENSORS = load_sensors()
ADC_FLOOR = round(enc.esp32_counts_exact(0.0))   # read_uv() of an undriven ESP32 input


def threshold(cls: str, name: str) -> float:
    value = MAPS.classes[cls].holding_register(name).default
    assert value is not None
    return value


def run(sensor: VirtualSensor, seconds: float, dt: float = 0.5) -> None:
    for _ in range(round(seconds / dt)):
        sensor.step(dt)


def pms_frames(feed: dict[str, Any]) -> list[bytes]:
    data = bytes.fromhex(feed["uart"]["pms"])
    return [data[i : i + 32] for i in range(0, len(data), 32)]


# --------------------------------------------------------------------------- contract


@pytest.mark.parametrize("cls", ["fire", "flood", "water", "air"])
def test_snapshot_is_json_with_the_raw_feed_keys(cls: str) -> None:
    sensor = make_sensor(cls, seed=3)
    run(sensor, 3)
    feed = sensor.snapshot()
    assert set(feed) == {"adc", "uart", "i2c", "power"}
    assert json.loads(json.dumps(feed)) == feed
    assert set(feed["adc"]) == set(type(sensor).ADC_CHANNELS)
    assert all(isinstance(c, int) and 0 <= c <= 4095 for c in feed["adc"].values())


def test_same_seed_same_feed() -> None:
    a, b = make_sensor("water", seed=11), make_sensor("water", seed=11)
    for _ in range(20):
        a.step(0.5)
        b.step(0.5)
        assert a.snapshot() == b.snapshot()


def test_unknown_class_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown sensor class 'smoke'"):
        make_sensor("smoke")


def test_readings_are_never_frozen_in_normal_operation() -> None:
    # The firmware flags a reading that stays exactly the same as 'stuck'.
    for cls in ("fire", "flood", "water"):
        sensor = make_sensor(cls, seed=5)
        seen: dict[str, set[int]] = {}
        for _ in range(30):
            sensor.step(0.5)
            for ch, counts in sensor.snapshot()["adc"].items():
                seen.setdefault(ch, set()).add(counts)
        assert all(len(values) > 1 for values in seen.values()), (cls, seen)


# --------------------------------------------------------------------------- fire


def test_quiet_room_reads_clean_chamber_and_ambient_heat() -> None:
    sensor = FireSensor(seed=1)
    run(sensor, 5)
    adc = sensor.snapshot()["adc"]
    assert abs(adc["smoke"] - enc.smoke_counts(0.0)) <= 5
    assert enc.ntc_temp_c(adc["heat"]) == pytest.approx(28.0, abs=0.3)


def test_fire_grows_as_t_squared_and_raises_smoke_and_heat() -> None:
    sensor = FireSensor(seed=1)
    sensor.apply("ignite", {"growth": 0.05})
    run(sensor, 20)
    assert sensor.truth()["hrr_kw"] == pytest.approx(0.05 * 20**2, rel=0.01)
    smoke_20, temp_20 = sensor.truth()["smoke"], sensor.truth()["temperature"]
    run(sensor, 30)
    truth = sensor.truth()
    assert truth["smoke"] > threshold("fire", "smoke_alarm") > smoke_20
    assert truth["temperature"] > temp_20 + 10
    # The detector's raw inputs tell the same story the firmware will decode.
    adc = sensor.snapshot()["adc"]
    assert enc.smoke_pct_m(adc["smoke"]) == pytest.approx(truth["smoke"], abs=0.2)
    assert enc.ntc_temp_c(adc["heat"]) == pytest.approx(truth["temperature"], abs=0.5)


def test_heat_rises_faster_than_the_rate_of_rise_threshold() -> None:
    sensor = FireSensor(seed=1)
    sensor.apply("ignite", {"growth": 0.05})
    run(sensor, 30)
    before = sensor.truth()["temperature"]
    run(sensor, 15)
    per_min = (sensor.truth()["temperature"] - before) * 4
    assert per_min > threshold("fire", "heat_rise")


def test_extinguished_and_ventilated_room_clears() -> None:
    sensor = FireSensor(seed=1)
    sensor.apply("ignite", {"growth": 0.05})
    run(sensor, 50)
    sensor.apply("extinguish")
    sensor.apply("ventilate", {"ach": 120})
    run(sensor, 40)
    assert sensor.truth()["hrr_kw"] == 0.0
    run(sensor, 80)
    assert sensor.truth()["smoke"] < 1.0
    assert sensor.truth()["temperature"] < 29.0


def test_closed_room_keeps_its_smoke() -> None:
    sensor = FireSensor(seed=1)
    sensor.apply("ignite", {"growth": 0.05})
    run(sensor, 50)
    sensor.apply("extinguish")
    run(sensor, 20)
    peak = sensor.truth()["smoke"]
    run(sensor, 60)
    assert sensor.truth()["smoke"] > 0.9 * peak


@pytest.mark.parametrize("cls", ["fire", "flood", "water", "air"])
def test_physics_does_not_depend_on_the_step_size(cls: str) -> None:
    script: dict[str, list[tuple[float, str, dict[str, float]]]] = {
        "fire": [(5, "ignite", {"growth": 0.05}), (50, "extinguish", {}),
                 (51, "ventilate", {})],
        "flood": [(5, "rain", {"mm_h": 250}), (40, "stop_rain", {})],
        "water": [(5, "dosing_fail", {}), (50, "dosing_restore", {})],
        "air": [(5, "traffic_peak", {}), (50, "traffic_clear", {})],
    }
    actions = script[cls]
    results: list[list[dict[str, float]]] = []
    for dt in (0.05, 0.5):
        sensor = make_sensor(cls)
        t, pending = 0.0, list(actions)
        trace: list[dict[str, float]] = []
        while t < 90 - 1e-9:
            while pending and pending[0][0] <= t + 1e-9:
                _, action, params = pending.pop(0)
                sensor.apply(action, params)
            sensor.step(dt)
            t += dt
            if abs(t / 10 - round(t / 10)) < 1e-6:
                trace.append(sensor.truth())
        results.append(trace)
    for fine, coarse in zip(*results, strict=True):
        for key, value in fine.items():
            assert coarse[key] == pytest.approx(value, rel=0.03, abs=0.02), key


# --------------------------------------------------------------------------- flood


def test_rain_fills_the_street_and_the_drains_empty_it() -> None:
    sensor = FloodSensor(seed=2)
    dry = sensor.truth()["level"]
    sensor.apply("rain", {"mm_h": 250})
    run(sensor, 40)
    assert sensor.truth()["level"] > threshold("flood", "stage3")
    sensor.apply("stop_rain")
    run(sensor, 90)
    assert sensor.truth()["level"] < threshold("flood", "stage1")
    assert sensor.truth()["level"] == pytest.approx(dry, abs=0.05)


def test_blocked_drains_hold_the_water() -> None:
    clear, blocked = FloodSensor(), FloodSensor()
    blocked.apply("block_drains", {"capacity": 0.2})
    for sensor in (clear, blocked):
        sensor.apply("rain", {"mm_h": 100})
        run(sensor, 40)
    assert blocked.truth()["level"] > clear.truth()["level"] + 0.2


def test_high_tide_pushes_water_back_up_the_outfall() -> None:
    sensor = FloodSensor()
    sensor.apply("tide", {"mean_m": 0.5, "amplitude_m": 0.3, "period_s": 120})
    run(sensor, 60)
    assert sensor.truth()["level"] > threshold("flood", "stage1")
    sensor.apply("tide_off")
    run(sensor, 120)
    assert sensor.truth()["level"] < threshold("flood", "stage1")


def test_level_maps_onto_the_loop_and_saturates_above_span() -> None:
    sensor = FloodSensor(seed=2)
    span = threshold("flood", "sensor_span")
    counts = sensor.snapshot()["adc"]["level"]
    assert enc.ma_value(enc.loop_ma(counts), span) == pytest.approx(0.05, abs=0.03)
    sensor.apply("rain", {"mm_h": 500})
    run(sensor, 300)
    assert sensor.truth()["level"] > span
    counts = sensor.snapshot()["adc"]["level"]
    assert enc.loop_ma(counts) == pytest.approx(20.5, abs=0.05)   # NAMUR saturation, no fault


# --------------------------------------------------------------------------- water


def test_water_station_normal_values() -> None:
    sensor = WaterSensor(seed=4)
    run(sensor, 5)
    truth = sensor.truth()
    assert truth["ph"] == pytest.approx(7.2)
    assert truth["turbidity"] == pytest.approx(0.5)
    assert truth["chlorine"] == pytest.approx(0.5)
    assert threshold("water", "pressure_low") < truth["pressure"] < threshold("water",
                                                                            "pressure_high")
    adc = sensor.snapshot()["adc"]
    assert enc.ph_value(adc["ph"]) == pytest.approx(7.2, abs=0.05)
    assert enc.turbidity_ntu(adc["turbidity"]) == pytest.approx(0.5, abs=0.08)
    assert enc.ma_value(enc.loop_ma(adc["chlorine"]), 5.0) == pytest.approx(0.5, abs=0.03)
    assert enc.ma_value(enc.loop_ma(adc["pressure"]), 10.0) == pytest.approx(
        truth["pressure"], abs=0.05)


def test_chlorine_decays_first_order_when_dosing_fails() -> None:
    sensor = WaterSensor()
    sensor.apply("dosing_fail", {"half_life_s": 30})
    run(sensor, 30)
    assert sensor.truth()["chlorine"] == pytest.approx(0.25, rel=1e-3)
    run(sensor, 30)
    assert sensor.truth()["chlorine"] == pytest.approx(0.125, rel=1e-3)
    sensor.apply("dosing_restore", {"mg_l": 0.5, "tau_s": 15})
    run(sensor, 60)
    assert sensor.truth()["chlorine"] == pytest.approx(0.5, abs=0.02)


def test_morning_demand_lowers_the_pressure() -> None:
    night, morning = WaterSensor(start_hour=3.0), WaterSensor(start_hour=6.5)
    assert morning.truth()["pressure"] < night.truth()["pressure"] - 0.5


def test_pipe_burst_drops_pressure_below_the_low_limit() -> None:
    sensor = WaterSensor()
    sensor.apply("pipe_burst", {"drop_bar": 3.5})
    run(sensor, 20)
    assert sensor.truth()["pressure"] < threshold("water", "pressure_low")
    sensor.apply("repair")
    run(sensor, 20)
    assert sensor.truth()["pressure"] > threshold("water", "pressure_low")


# --------------------------------------------------------------------------- air


def test_air_station_emits_one_valid_pms_frame_per_simulated_second() -> None:
    sensor = AirSensor(seed=6)
    run(sensor, 10)
    frames = pms_frames(sensor.snapshot())
    assert len(frames) == 10
    readings = [enc.parse_pms5003(f) for f in frames]
    assert all(r.checksum_ok for r in readings)
    assert all(r.pm1 <= r.pm25 <= r.pm10 for r in readings)
    assert 10 < sum(r.pm25 for r in readings) / 10 < 40
    assert sensor.snapshot()["uart"]["pms"] == ""     # drained: nothing new yet
    run(sensor, 2)
    assert len(pms_frames(sensor.snapshot())) == 2


def test_scd41_reports_outdoor_co2_and_tropical_weather() -> None:
    sensor = AirSensor(seed=6)
    run(sensor, 6)
    co2, temp, rh = enc.parse_scd41(bytes.fromhex(sensor.snapshot()["i2c"]["98"]))
    assert 420 < co2 < 490
    assert 28 < temp < 35
    assert 60 < rh < 90


def test_traffic_peak_raises_pm25_above_the_alarm_and_clears() -> None:
    sensor = AirSensor(seed=6)
    sensor.apply("traffic_peak", {"pm25": 60})
    run(sensor, 60)
    alarm = threshold("air", "pm25_alarm")
    assert sensor.truth()["pm2_5"] > alarm
    frames = [enc.parse_pms5003(f) for f in pms_frames(sensor.snapshot())]
    assert sum(r.pm25 for r in frames[-10:]) / 10 > alarm
    sensor.apply("traffic_clear")
    run(sensor, 60)
    assert sensor.truth()["pm2_5"] < alarm - 20


def test_co2_plume_crosses_the_co2_alarm() -> None:
    sensor = AirSensor()
    sensor.apply("co2_plume", {"ppm": 1500})
    run(sensor, 100)
    assert sensor.truth()["co2"] > threshold("air", "co2_alarm")


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize(("cls", "channel"), [("fire", "smoke"), ("fire", "heat"),
                                              ("flood", "level"), ("water", "pressure"),
                                              ("water", "ph"), ("water", "chlorine")])
def test_open_and_short_drive_the_input_to_the_rails(cls: str, channel: str) -> None:
    sensor = make_sensor(cls)
    sensor.apply("fault", {"kind": "open", "channel": channel})
    # an undriven ESP32 input reads the calibrated converter's floor, at or below open_counts
    assert sensor.snapshot()["adc"][channel] == ADC_FLOOR <= SENSORS["adc"]["open_counts"]
    sensor.apply("fault", {"kind": "short", "channel": channel})
    assert sensor.snapshot()["adc"][channel] == 4095
    sensor.apply("fault", {"kind": "clear", "channel": channel})
    assert 0 < sensor.snapshot()["adc"][channel] < 4095


def test_fault_without_channel_hits_every_input() -> None:
    sensor = make_sensor("water")
    sensor.apply("fault", {"kind": "open"})
    assert set(sensor.snapshot()["adc"].values()) == {ADC_FLOOR}
    sensor.apply("fault", {"kind": "clear"})
    assert ADC_FLOOR not in sensor.snapshot()["adc"].values()


def test_stuck_input_holds_an_exact_value_while_the_fire_grows() -> None:
    sensor = FireSensor(seed=9)
    sensor.apply("fault", {"kind": "stuck", "channel": "smoke"})
    stuck = sensor.snapshot()["adc"]["smoke"]
    sensor.apply("ignite", {"growth": 0.05})
    values = set()
    for _ in range(100):
        sensor.step(0.5)
        values.add(sensor.snapshot()["adc"]["smoke"])
    assert values == {stuck}
    assert sensor.truth()["smoke"] > 4


def test_noise_fault_scatters_the_reading() -> None:
    sensor = make_sensor("flood", seed=1)
    quiet = [sensor.snapshot()["adc"]["level"] for _ in range(200)]
    sensor.apply("fault", {"kind": "noise", "channel": "level"})
    noisy = [sensor.snapshot()["adc"]["level"] for _ in range(200)]
    assert max(quiet) - min(quiet) < 20
    assert max(noisy) - min(noisy) > 300


def test_nack_removes_the_scd41_from_the_bus() -> None:
    sensor = AirSensor()
    sensor.apply("fault", {"kind": "nack"})
    assert "98" not in sensor.snapshot()["i2c"]
    sensor.apply("fault", {"kind": "clear", "channel": "scd41"})
    assert "98" in sensor.snapshot()["i2c"]


def test_checksum_fault_sends_frames_with_bad_checksums() -> None:
    sensor = AirSensor()
    sensor.apply("fault", {"kind": "checksum"})
    run(sensor, 5)
    frames = pms_frames(sensor.snapshot())
    assert len(frames) == 5
    assert not any(enc.parse_pms5003(f).checksum_ok for f in frames)
    assert "98" in sensor.snapshot()["i2c"]       # the SCD41 is untouched by default
    sensor.apply("fault", {"kind": "checksum", "channel": "98"})
    with pytest.raises(ValueError, match="CRC"):
        enc.parse_scd41(bytes.fromhex(sensor.snapshot()["i2c"]["98"]))


def test_open_pms_line_is_silent_and_shorted_one_reads_zero_bytes() -> None:
    sensor = AirSensor()
    sensor.apply("fault", {"kind": "open", "channel": "pms"})
    run(sensor, 3)
    assert sensor.snapshot()["uart"]["pms"] == ""
    sensor.apply("fault", {"kind": "short", "channel": "pms"})
    run(sensor, 1)
    assert sensor.snapshot()["uart"]["pms"] == "00" * 32


def test_stuck_air_station_repeats_exactly_the_same_bytes() -> None:
    sensor = AirSensor(seed=2)
    run(sensor, 6)
    sensor.snapshot()
    sensor.apply("fault", {"kind": "stuck"})
    sensor.apply("traffic_peak", {"pm25": 200})
    run(sensor, 20)
    feed = sensor.snapshot()
    assert len(set(pms_frames(feed))) == 1
    assert feed["i2c"]["98"] == sensor.snapshot()["i2c"]["98"]


def test_noisy_pms_line_still_carries_some_good_frames() -> None:
    sensor = AirSensor(seed=3)
    sensor.apply("fault", {"kind": "noise", "channel": "pms"})
    run(sensor, 30)
    data = bytes.fromhex(sensor.snapshot()["uart"]["pms"])
    starts = [i for i in range(len(data) - 31) if data[i : i + 2] == b"\x42\x4d"]
    good = [i for i in starts if enc.parse_pms5003(data[i : i + 32]).checksum_ok]
    assert len(data) > 30 * 32
    assert 5 < len(good) < 30


@pytest.mark.parametrize(
    ("cls", "action", "params", "message"),
    [
        ("fire", "fault", {"kind": "melt"}, "params.kind"),
        ("fire", "fault", {"kind": "open", "channel": "level"}, "params.channel"),
        ("fire", "fault", {"kind": "nack", "channel": "smoke"}, "I2C"),
        ("air", "fault", {"kind": "checksum", "channel": "adc"}, "params.channel"),
        ("fire", "ignite", {"growth": "fast"}, "params.growth must be a number"),
        ("fire", "ignite", {"growth": -1}, "below its minimum"),
        ("fire", "ignite", {"speed": 1}, "params.speed is not a parameter"),
        ("flood", "ignite", {}, "action 'ignite' is not a flood action"),
        ("water", "fault", {}, "params.kind is required"),
    ],
)
def test_bad_actions_are_refused_naming_the_field(
    cls: str, action: str, params: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        validate_action(cls, action, params)
    with pytest.raises(ValueError, match=message):
        make_sensor(cls).apply(action, params)


def test_every_class_accepts_every_fault_kind() -> None:
    for cls in ("fire", "flood", "water", "air"):
        sensor = make_sensor(cls)
        for kind in ("open", "short", "stuck", "noise", "nack", "checksum", "clear"):
            sensor.apply("fault", {"kind": kind})
            sensor.step(1.0)
            json.dumps(sensor.snapshot())
